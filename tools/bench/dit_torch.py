"""PyTorch counterpart of `hsa bench dit`: diffusers WanTransformer3DModel forward, same config
and thread count, random weights. Prints the median wall time of the dense forward.

    python tools/bench/dit_torch.py --threads 2 --reps 3
    python tools/bench/dit_torch.py --device cuda --reps 10     # against `hsa --device cuda bench dit`

Same defaults as `hsa bench dit`: D=1536 (12 heads x 128), 4 layers, ffn 8960, N=4096 tokens
(latent 16 x 4 x 64 x 64 -> 4 x 32 x 32 tokens), 512 text rows of width 4096, f32.
diffusers has no token-subset forward, so only the dense pass has a counterpart.
"""

import argparse
import statistics
import time

import torch
from diffusers import WanTransformer3DModel


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dim", type=int, default=1536)
    ap.add_argument("--heads", type=int, default=12)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--ffn", type=int, default=8960)
    ap.add_argument("--grid", default="4x32x32")
    ap.add_argument("--text-len", type=int, default=512)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    dev = torch.device(args.device)

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    f, h, w = (int(v) for v in args.grid.split("x"))
    model = WanTransformer3DModel(
        patch_size=(1, 2, 2),
        num_attention_heads=args.heads,
        attention_head_dim=args.dim // args.heads,
        in_channels=16,
        out_channels=16,
        text_dim=4096,
        freq_dim=256,
        ffn_dim=args.ffn,
        num_layers=args.layers,
    ).eval().to(dev)
    x = torch.randn(1, 16, f, 2 * h, 2 * w).to(dev)
    t = torch.tensor([500.0]).to(dev)
    text = torch.randn(1, args.text_len, 4096).to(dev)

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize()

    def run():
        sync()
        start = time.perf_counter()
        with torch.inference_mode():
            model(hidden_states=x, timestep=t, encoder_hidden_states=text, return_dict=False)
        sync()
        return time.perf_counter() - start

    run()  # warm-up
    times = [run() for _ in range(args.reps)]
    print(
        f"torch {torch.__version__} device={args.device} threads={torch.get_num_threads()} "
        f"D={args.dim} layers={args.layers} N={f*h*w}: dense median {statistics.median(times):.3f} s "
        f"(runs: {', '.join(f'{s:.3f}' for s in times)})"
    )


if __name__ == "__main__":
    main()
