#!/bin/bash
# Trains the bundled moving-shapes model (models/shapes-wan) on one CUDA GPU within a wall-time
# budget, with the same trainer as `hsa train shapes` on a CPU. Not run by CI.
#
# Usage (on the GPU machine, with an `hsa` built by `cargo build --release -p hsa-cli --features cuda`):
#   BIN=./hsa OUT=out BUDGET_S=420 tools/gpu/train-shapes.sh
#   BIN=./hsa OUT=out STEPS=850 TRAIN_S=360 INIT_FROM=shapes-wan tools/gpu/train-shapes.sh   (continue an export)
#   ... SHIFT=2 MOTION_WEIGHT=4 INIT_FROM=models/shapes-wan tools/gpu/train-shapes.sh     (the current recipe)
# One trainer per GPU: two at once (batch 64 and 128) ran out of an H100's 80 GB at their first update.
# Short probe runs measure the seconds per update at batch BATCH and 2xBATCH; the larger batch is
# taken when it costs less than 1.5x the time (the step is then bound by per-kernel overhead, and
# the extra clips come almost free). The real run then gets as many updates as fit the budget, so
# its cosine learning-rate schedule completes. Writes to $OUT: the exported model folder as
# shapes-wan.tar, loss.csv, train_config.json and probe.txt.
set -euo pipefail
BIN=${BIN:-./hsa}
OUT=${OUT:-out}
BUDGET_S=${BUDGET_S:-420}
BATCH=${BATCH:-64}
LR=${LR:-6e-4}
EMA=${EMA:-0.999}
DIM=${DIM:-256}
HEADS=${HEADS:-4}
LAYERS=${LAYERS:-6}
FFN=${FFN:-1024}
FRAMES=${FRAMES:-9}
WORK=${WORK:-/tmp/shapes-run}
DEVICE=${DEVICE:-cuda}
PROBE=${PROBE:-24}
# Noise shift and motion weight of the loss: the bundled model's segments 5-6 used SHIFT=2 and
# (segment 6) MOTION_WEIGHT=4; the defaults are segments 1-2's.
SHIFT=${SHIFT:-1}
MOTION_WEIGHT=${MOTION_WEIGHT:-0}
# Data seed: segments 1-2 used the default 0; each later segment its own.
SEED=${SEED:-0}
ARCH=(--dim "$DIM" --heads "$HEADS" --layers "$LAYERS" --ffn "$FFN" --frames "$FRAMES" --size 32 --lr "$LR" --ema-decay "$EMA"
  --shift "$SHIFT" --motion-weight "$MOTION_WEIGHT" --seed "$SEED")
mkdir -p "$OUT"

# The CUDA libraries come from the machine's PyTorch wheels (cuBLAS, cuRAND, NVRTC, runtime) and
# its driver (libcuda.so.1).
libdirs=$(find /opt /usr/local /usr/lib /usr/lib64 \( -name libcublasLt.so.13 -o -name libcurand.so.10 \
  -o -name libnvrtc.so.13 -o -name libcudart.so.13 -o -name libcuda.so.1 \) 2>/dev/null | xargs -r -n1 dirname | sort -u | paste -sd:)
export LD_LIBRARY_PATH="$libdirs:${LD_LIBRARY_PATH:-}"
echo "LD_LIBRARY_PATH=$LD_LIBRARY_PATH"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
ldd "$BIN" | grep -E "cuda|cublas|curand|nvrtc|not found" || true

# Seconds per update over the last two thirds of a probe run (the first updates include start-up).
probe() {
  local dir=/tmp/shapes-probe-$1
  rm -rf "$dir"
  "$BIN" train shapes --work "$dir" --steps "$PROBE" --checkpoint-every 100000 --device "$DEVICE" --batch "$1" "${ARCH[@]}" >/dev/null
  awk -F, -v p="$PROBE" '$1==int(p/3){a=$5} $1==p{b=$5} END{printf "%.6f", (b-a)/(p-int(p/3))}' "$dir/loss.csv"
}
if [ -n "${STEPS:-}" ]; then
  # Known seconds per update: no probe.
  batch=$BATCH steps=$STEPS
else
  small=$(probe "$BATCH")
  large=$(probe $((2 * BATCH)))
  read -r batch per < <(awk -v s="$small" -v l="$large" -v b="$BATCH" 'BEGIN{ if (l < 1.5 * s) print 2*b, l; else print b, s }')
  steps=$(awk -v p="$per" -v b="$BUDGET_S" 'BEGIN{printf "%d", b/p}')
  echo "probe: $small s per update at batch $BATCH, $large s at batch $((2 * BATCH)) -> batch $batch, $steps updates in $BUDGET_S s" | tee "$OUT/probe.txt"
fi
# INIT_FROM: a model folder (an earlier export) to start from, with a fresh optimiser.
init=()
[ -n "${INIT_FROM:-}" ] && init=(--init-from "$INIT_FROM")
# The run is cut at TRAIN_S seconds if it must be (the device lease ends regardless); the last
# checkpoint is exported then.
timeout "${TRAIN_S:-100000}" "$BIN" train shapes --work "$WORK" --steps "$steps" --checkpoint-every "${CHECKPOINT_EVERY:-500}" \
  --device "$DEVICE" --batch "$batch" "${ARCH[@]}" "${init[@]}" || echo "training stopped early; exporting the last checkpoint"
"$BIN" train export --work "$WORK" --out /tmp/shapes-wan
tar -C /tmp -cf "$OUT/shapes-wan.tar" shapes-wan
cp "$WORK/loss.csv" "$WORK/train_config.json" "$OUT/"
# A first look at the checker score (the model card's numbers come from the CPU run of the same command).
timeout "${EVAL_S:-60}" "$BIN" eval checker --model /tmp/shapes-wan --captions 50 --device "$DEVICE" --out "$OUT/checker.json" || true
ls -la "$OUT"
