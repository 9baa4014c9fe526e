"""PyTorch counterpart of `cargo bench -p hsa-models --bench attention` (timing mode):
`F.scaled_dot_product_attention` on 12 heads x 4096 keys x head dim 128, f32, B=1, for 4096,
2048 and 1024 queries. Prints median / min / max wall time and CPU time of --reps runs after
one warm-up per shape, in the same format as the Rust bench.

    python tools/bench/attention_torch.py --threads 2 --reps 5
    HSA_ATTN_TIMING=5 cargo bench -p hsa-models --bench attention   # the Rust side
"""

import argparse
import statistics
import time

import torch
import torch.nn.functional as F


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--heads", type=int, default=12)
    ap.add_argument("--tokens", type=int, default=4096)
    ap.add_argument("--head-dim", type=int, default=128)
    ap.add_argument("--queries", default="4096,2048,1024")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    dtype = getattr(torch, args.dtype)
    h, n, d = args.heads, args.tokens, args.head_dim
    k = torch.randn(1, h, n, d, dtype=dtype)
    v = torch.randn(1, h, n, d, dtype=dtype)
    scale = 1.0 / d**0.5

    for lq in (int(x) for x in args.queries.split(",")):
        q = torch.randn(1, h, lq, d, dtype=dtype)

        def run():
            c0, t0 = time.process_time(), time.perf_counter()
            with torch.inference_mode():
                F.scaled_dot_product_attention(q, k, v, scale=scale)
            return time.perf_counter() - t0, time.process_time() - c0

        run()  # warm-up
        runs = [run() for _ in range(args.reps)]
        wall = sorted(r[0] for r in runs)
        cpu = statistics.median(r[1] for r in runs)
        med = statistics.median(wall)
        flop = 4.0 * h * lq * n * d
        print(
            f"{'torch_sdpa':<16} lq={lq:<5} median {med:.3f} s  min {wall[0]:.3f}  "
            f"max {wall[-1]:.3f}  ({flop / med / 1e9:.1f} GFLOP/s)  "
            f"cpu {cpu:.2f} s ({flop / cpu / 1e9:.1f} GFLOP/cpu-s)  "
            f"[torch {torch.__version__}, threads={torch.get_num_threads()}, {args.dtype}]"
        )


if __name__ == "__main__":
    main()
