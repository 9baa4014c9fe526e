"""PyTorch counterpart of `hsa bench vae`: diffusers AutoencoderKLWan decode (or encode), same
config, weights, input and thread count. Prints JSON lines on stdout.

`hsa bench vae --torch` runs this script itself, in `--serve` mode, so that the two sides'
repeats alternate in one invocation (Rust, PyTorch, Rust, PyTorch, ...):

    hsa bench vae --torch --python /root/hsa-venv/bin/python

Standalone (diffusers' own random initialisation, random input of the given size):

    python tools/bench/vae_decode_torch.py --config wan21 --frames 5 --size 128x128 --threads 2

Modes:
  * default: one warm-up, then `--repeats` timed passes; prints
    {"event": "result", "median": s, "seconds": [...], ...}.
  * `--serve`: load, one warm-up, print {"event": "ready", ...}; then for every line "run" on
    stdin time one pass and print {"event": "run", "seconds": s}; on "quit" (or EOF) write
    `--out` and print {"event": "done"}.

`--weights FILE` loads a safetensors file with diffusers key names (what `hsa bench vae`
writes: the decoder and post_quant_conv, plus the encoder and quant_conv for `--encode`);
`--input FILE` a safetensors file whose tensor "input" is the latent (decode) or the video
(encode). `--out FILE` receives the last pass's output as tensor "output" (f32). Everything
runs in float32 on the CPU with `torch.set_num_threads(--threads)`, under inference_mode.
"""

import argparse
import json
import os
import statistics
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from diffusers import AutoencoderKLWan  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402

# The two published Wan VAEs (diffusers AutoencoderKLWan arguments); latent statistics do not
# enter encode/decode and keep their defaults.
CONFIGS = {
    "wan21": dict(),
    "wan22": dict(base_dim=160, decoder_base_dim=256, z_dim=48, dim_mult=[1, 2, 4, 4],
                  num_res_blocks=2, attn_scales=[], temperal_downsample=[False, True, True],
                  is_residual=True, in_channels=12, out_channels=12, patch_size=2,
                  scale_factor_spatial=16, scale_factor_temporal=4),
}


def emit(**fields):
    print(json.dumps(fields), flush=True)


def build(args):
    model = AutoencoderKLWan(**CONFIGS[args.config]).eval()
    if args.weights:
        sd = load_file(args.weights)
        missing, unexpected = model.load_state_dict(sd, strict=False)
        if unexpected:
            sys.exit(f"weights have keys diffusers does not: {unexpected[:5]}")
        # A decode-only file leaves the encoder out; nothing else may be missing.
        needed = [k for k in missing if args.encode or not k.startswith(("encoder.", "quant_conv."))]
        if needed:
            sys.exit(f"weights lack keys diffusers needs: {needed[:5]}")
        if not args.encode and missing:
            del model.encoder, model.quant_conv  # not used by decode; frees their memory
    return model


def make_input(args, model):
    if args.input:
        return load_file(args.input)["input"].float()
    w, h = (int(v) for v in args.size.split("x"))
    cfg = model.config
    if args.encode:
        return torch.rand(1, 3, args.frames, h, w) * 2.0 - 1.0
    s = cfg.scale_factor_spatial
    f = 1 + (args.frames - 1) // cfg.scale_factor_temporal
    return torch.randn(1, cfg.z_dim, f, h // s, w // s)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", choices=sorted(CONFIGS), default="wan21")
    ap.add_argument("--weights", help="safetensors with diffusers keys (default: random init)")
    ap.add_argument("--input", help="safetensors with tensor 'input' (default: random)")
    ap.add_argument("--frames", type=int, default=5, help="pixel frames (without --input)")
    ap.add_argument("--size", default="128x128", help="WxH in pixels (without --input)")
    ap.add_argument("--encode", action="store_true", help="time the encoder instead")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", help="write the last output here (tensor 'output')")
    ap.add_argument("--serve", action="store_true", help="time one pass per 'run' line on stdin")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = build(args)
    x = make_input(args, model)

    def run():
        start = time.perf_counter()
        with torch.inference_mode():
            if args.encode:
                y = model.encode(x).latent_dist.mean
            else:
                y = model.decode(x).sample
        return time.perf_counter() - start, y

    info = dict(torch=torch.__version__, threads=torch.get_num_threads(), config=args.config,
                mode="encode" if args.encode else "decode", input=list(x.shape))
    warm, y = run()
    if args.serve:
        emit(event="ready", warmup=warm, **info)
        for line in sys.stdin:
            cmd = line.strip()
            if cmd == "run":
                s, y = run()
                emit(event="run", seconds=s)
            elif cmd == "quit":
                break
            elif cmd:
                emit(event="error", message=f"unknown command {cmd!r}")
        times = None
    else:
        times = []
        for _ in range(args.repeats):
            s, y = run()
            times.append(s)
    if args.out:
        save_file({"output": y.float().contiguous()}, args.out)
    if times is None:
        emit(event="done", output=list(y.shape))
    else:
        emit(event="result", median=statistics.median(times), seconds=times, warmup=warm,
             output=list(y.shape), **info)


if __name__ == "__main__":
    main()
