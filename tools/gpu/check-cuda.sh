#!/bin/bash
# The CUDA path of `hsa` on a GPU machine (not run by CI): the same generations on the CPU and
# on CUDA from the tiny fixtures (text to video with UniPC and HSA, image to video for the three
# families, the original layout, the bundled model), frames compared; then the DiT forward on
# the GPU against PyTorch (diffusers) on the same GPU, the foundation config and a Wan2.1-1.3B
# 480p-sized one.
#
# Usage: tools/gpu/build-cuda.sh here (writes .gpu/hsa.gz), then in the repository root on the
# GPU machine (device tool: carry [".gpu/hsa.gz"]):
#   OUT=$OUT tools/gpu/check-cuda.sh
set -uo pipefail
OUT=${OUT:-out}
mkdir -p "$OUT"
source "$(dirname "$0")/env.sh"

fx=tests/fixtures
frames=/tmp/frames
case_run() {
  local name=$1; shift
  for dev in cpu cuda; do
    rm -rf "$frames/$dev-$name"
    local t0=$(date +%s%N)
    if "$BIN" --device "$dev" generate "$@" --scale 1 -o "$frames/$dev-$name" > "$frames/$dev-$name.log" 2>&1; then
      echo "$name $dev ok $(( ($(date +%s%N) - t0) / 1000000 )) ms"
    else
      echo "$name $dev FAILED:"; tail -3 "$frames/$dev-$name.log"
    fi
  done
}
mkdir -p "$frames"
T2V=(--model $fx/wan_pipeline/tiny --prompt "A red fox runs across a snowy field, cinematic lighting"
     --negative-prompt "blurry, static, low quality" --frames 5 --size 32x32 --guidance 4
     --latents $fx/wan_pipeline/io.safetensors)
case_run t2v-unipc "${T2V[@]}" --steps 4
case_run t2v-hsa "${T2V[@]}" --steps 8 --sampler hsa --budget 0.5
case_run i2v-wan21 --model $fx/wan_i2v/wan21_i2v --image $fx/wan_i2v/image_wan21_i2v.png \
  --prompt "a paper boat" --frames 5 --size 32x32 --steps 4 --guidance 4 --sampler fm
case_run i2v-a14b --model $fx/wan_i2v/wan22_i2v_a14b --image $fx/wan_i2v/image_wan22_i2v_a14b.png \
  --prompt "a lighthouse" --frames 5 --size 48x32 --steps 4 --guidance 4 --guidance-2 2.5 --sampler fm
case_run ti2v-hsa --model $fx/wan_i2v/wan22_ti2v --image $fx/wan_i2v/image_wan22_ti2v.png \
  --prompt "a balloon" --frames 5 --size 64x32 --steps 8 --guidance 4 --sampler hsa --budget 0.5
case_run original --model $fx/wan_original --prompt "a small red kite over a green hill" \
  --negative-prompt "blurry, static" --frames 5 --size 32x32 --steps 4 --guidance 4 --shift 3 \
  --latents $fx/wan_original/io.safetensors
case_run bundled --prompt "a green square moving right on a white background"
python3 - "$frames" <<'PY' | tee "$OUT/cuda_vs_cpu.txt"
import sys, pathlib
import numpy as np
from PIL import Image
root = pathlib.Path(sys.argv[1])
for cpu in sorted(root.glob("cpu-*")):
    if not cpu.is_dir():
        continue
    cuda = root / cpu.name.replace("cpu-", "cuda-", 1)
    a = sorted(cpu.glob("*.png")); b = sorted(cuda.glob("*.png")) if cuda.is_dir() else []
    if not a or len(a) != len(b):
        print(f"{cpu.name[4:]}: frames {len(a)} cpu vs {len(b)} cuda"); continue
    d = max(int(np.abs(np.asarray(Image.open(x), np.int16) - np.asarray(Image.open(y), np.int16)).max()) for x, y in zip(a, b))
    print(f"{cpu.name[4:]}: {len(a)} frames, max difference {d} of 255")
PY

python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl 2>/dev/null \
  && export PYTHONPATH=/tmp/site
for cfg in "--layers 4 --grid 4x32x32" "--layers 30 --grid 21x30x52"; do
  "$BIN" --device cuda bench dit $cfg --reps 5 --fractions 0.5,0.25 2>&1 | tail -5 | tee -a "$OUT/dit_cuda.txt"
  python3 tools/bench/dit_torch.py --device cuda $cfg --reps 5 2>&1 | tail -1 | tee -a "$OUT/dit_cuda.txt"
done
