"""PyTorch counterpart of `hsa bench train`: one training update of diffusers'
WanTransformer3DModel with the trainer of `hsa train shapes` (flow-matching loss, backward,
gradient clipping at --max-grad-norm, AdamW with weight decay on matrices, weight average), on
the same config, weights, batch and thread count. Prints JSON lines on stdout.

`hsa bench train --torch` runs this script itself, so that the two sides' updates alternate in
one invocation (Rust, PyTorch, Rust, PyTorch, ...):

    hsa bench train --torch --python /root/hsa-venv/bin/python

Protocol: load, run one warm-up update, print {"event": "ready", "warmup": s, "loss": l, ...};
then for every line "run" on stdin time one update and print {"event": "run", "seconds": s,
"loss": l}; on "quit" (or EOF) print {"event": "done"}. `loss` is the update's loss before its
step, so the ready event's loss is the loss of the shared starting weights.

Inputs: `--config` a diffusers config.json, `--weights` a safetensors file with diffusers key
names, `--inputs` a safetensors file with x0, eps [B, C, F, H, W], sigmas [B], context
[B, S, text_dim]. Float32 throughout; on CUDA, TF32 matrix products as in `hsa train`.
"""

import argparse
import json
import os
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from diffusers import WanTransformer3DModel  # noqa: E402
from safetensors.torch import load_file  # noqa: E402


def emit(**fields):
    print(json.dumps(fields), flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", required=True)
    ap.add_argument("--weights", required=True)
    ap.add_argument("--inputs", required=True)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--lr", type=float, default=4e-4)
    ap.add_argument("--weight-decay", type=float, default=0.01)
    ap.add_argument("--max-grad-norm", type=float, default=1.0)
    ap.add_argument("--ema-decay", type=float, default=0.995)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    dev = torch.device(args.device)
    if dev.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True

    with open(args.config) as f:
        config = {k: v for k, v in json.load(f).items() if not k.startswith("_")}
    model = WanTransformer3DModel(**config)
    missing, unexpected = model.load_state_dict(load_file(args.weights), strict=False)
    if missing or unexpected:
        sys.exit(f"weights do not fit the config: missing {missing[:5]}, unexpected {unexpected[:5]}")
    model = model.to(dev).train()
    io = {k: v.to(dev) for k, v in load_file(args.inputs).items()}
    x0, eps, sigmas, context = io["x0"], io["eps"], io["sigmas"], io["context"]

    params = list(model.parameters())
    groups = [
        dict(params=[p for p in params if p.ndim >= 2], weight_decay=args.weight_decay),
        dict(params=[p for p in params if p.ndim < 2], weight_decay=0.0),
    ]
    opt = torch.optim.AdamW(groups, lr=args.lr, betas=(0.9, 0.999), eps=1e-8)
    ema = [p.detach().clone() for p in params]
    updates = 0

    def update():
        nonlocal updates
        start = time.perf_counter()
        s = sigmas.view(-1, 1, 1, 1, 1)
        xt = (1.0 - s) * x0 + s * eps
        v = model(xt, sigmas * 1000.0, context, return_dict=False)[0]
        loss = (v - (eps - x0)).pow(2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, args.max_grad_norm)
        opt.step()
        updates += 1
        d = min(args.ema_decay, (1.0 + updates) / (10.0 + updates))
        with torch.no_grad():
            torch._foreach_lerp_(ema, [p.detach() for p in params], 1.0 - d)
        loss_value = loss.item()  # waits for the device
        return time.perf_counter() - start, loss_value

    warm, loss = update()
    emit(event="ready", warmup=warm, loss=loss, torch=torch.__version__,
         threads=torch.get_num_threads(), device=str(dev))
    for line in sys.stdin:
        cmd = line.strip()
        if cmd == "run":
            s, loss = update()
            emit(event="run", seconds=s, loss=loss)
        elif cmd == "quit":
            break
        elif cmd:
            emit(event="error", message=f"unknown command {cmd!r}")
    emit(event="done")


if __name__ == "__main__":
    main()
