#!/bin/bash
# Trains the bundled moving-shapes model (models/shapes-wan) on one CUDA GPU within a wall-time
# budget, with the same trainer as `hsa train shapes` on a CPU. Not run by CI.
#
# Usage (on the GPU machine, with an `hsa` built by `cargo build --release -p hsa-cli --features cuda`):
#   BIN=./hsa OUT=out BUDGET_S=420 tools/gpu/train-shapes.sh
# A short probe run measures the seconds per update first; the real run then gets as many updates as
# fit the budget, so its cosine learning-rate schedule completes. Writes to $OUT: the exported model
# folder as shapes-wan.tar, loss.csv, train_config.json and the full checkpoint (split in parts of
# 15 MB, reassemble with `cat state.part-* > state.safetensors`) so the run can be resumed.
set -euo pipefail
BIN=${BIN:-./hsa}
OUT=${OUT:-out}
BUDGET_S=${BUDGET_S:-420}
BATCH=${BATCH:-32}
LR=${LR:-8e-4}
EMA=${EMA:-0.999}
WORK=${WORK:-/tmp/shapes-run}
DEVICE=${DEVICE:-cuda}
PROBE=${PROBE:-60}
ARCH=(--dim 128 --heads 2 --layers 4 --ffn 512 --frames 9 --size 32 --batch "$BATCH" --lr "$LR" --ema-decay "$EMA")
mkdir -p "$OUT"

# The CUDA libraries come from the machine's PyTorch wheels (cuBLAS, cuRAND, NVRTC, runtime) and
# its driver (libcuda.so.1).
libdirs=$(find /opt /usr/local /usr/lib /usr/lib64 \( -name libcublasLt.so.13 -o -name libcurand.so.10 \
  -o -name libnvrtc.so.13 -o -name libcudart.so.13 -o -name libcuda.so.1 \) 2>/dev/null | xargs -r -n1 dirname | sort -u | paste -sd:)
export LD_LIBRARY_PATH="$libdirs:${LD_LIBRARY_PATH:-}"
echo "LD_LIBRARY_PATH=$LD_LIBRARY_PATH"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
ldd "$BIN" | grep -E "cuda|cublas|curand|nvrtc|not found" || true

probe=/tmp/shapes-probe
rm -rf "$probe"
"$BIN" train shapes --work "$probe" --steps "$PROBE" --checkpoint-every 100000 --device "$DEVICE" "${ARCH[@]}"
# seconds per update over the last two thirds of the probe (the first updates include start-up).
per=$(awk -F, -v p="$PROBE" '$1==int(p/3){a=$5} $1==p{b=$5} END{printf "%.6f", (b-a)/(p-int(p/3))}' "$probe/loss.csv")
steps=$(awk -v p="$per" -v b="$BUDGET_S" 'BEGIN{printf "%d", b/p}')
echo "probe: $per s per update at batch $BATCH -> $steps updates in $BUDGET_S s"

"$BIN" train shapes --work "$WORK" --steps "$steps" --checkpoint-every 2000 --device "$DEVICE" "${ARCH[@]}"
"$BIN" train export --work "$WORK" --out /tmp/shapes-wan
tar -C /tmp -cf "$OUT/shapes-wan.tar" shapes-wan
cp "$WORK/loss.csv" "$WORK/train_config.json" "$OUT/"
split -b 15000000 -d "$WORK/checkpoint/state.safetensors" "$OUT/state.part-"
cp "$WORK/checkpoint/state.json" "$OUT/state.json"
ls -la "$OUT"
