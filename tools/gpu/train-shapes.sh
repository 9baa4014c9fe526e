#!/bin/bash
# Trains the bundled moving-shapes model (models/shapes-wan) on one CUDA GPU within a wall-time
# budget, with the same trainer as `hsa train shapes` on a CPU. Not run by CI.
#
# Usage: build and pack `hsa` here with tools/gpu/build-cuda.sh (writes .gpu/hsa.gz), then on
# the GPU machine, repository root (device tool: carry [".gpu/hsa.gz"], timeout_s 600):
#   OUT=$OUT BUDGET_S=420 tools/gpu/train-shapes.sh                                  (from scratch)
#   OUT=$OUT POSITION_CHANNELS=1 SHIFT=2 MOTION_WEIGHT=4 EMA=0.99 LR=3e-4 SEED=24 INIT_FROM=models/shapes-wan \
#       BUDGET_S=450 tools/gpu/train-shapes.sh                      (continue the bundled model)
# A 15-minute lease fits one such call (start 1-2 min, probe, BUDGET_S of training, export and a
# one-minute checker) with time to spare; the machine goes back 30 s after a call, so a second
# call usually pays for a new start.
# One trainer per GPU: two at once (batch 64 and 128) ran out of an H100's 80 GB at their first update.
# A short probe run measures the seconds per update at batch BATCH and, with PROBE_DOUBLE=1, at
# 2xBATCH; the larger batch is taken when it costs less than 1.5x the time (the step is then
# bound by per-kernel overhead, and the extra clips come almost free). On the shipped
# architecture batch 128 cost 1.9x batch 64 on an H200, so the default probes BATCH alone. The
# real run then gets as many updates as fit the budget, so its cosine learning-rate schedule
# completes. Writes to $OUT: the exported model folder as shapes-wan.tar, loss.csv,
# train_config.json, probe.txt and checker.json.
# An existing WORK folder is resumed from its last checkpoint; FRESH=1 starts it afresh.
# EVAL_S: seconds for the closing checker (default 60); EVAL_S=0 skips it.
set -euo pipefail
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
EVAL_S=${EVAL_S:-60}
DEVICE=${DEVICE:-cuda}
PROBE=${PROBE:-24}
# Noise shift and motion weight of the loss: the bundled model's segments 5-9 used SHIFT=2 and
# segments 6-9 MOTION_WEIGHT=4; the defaults are segments 1-2's.
SHIFT=${SHIFT:-1}
MOTION_WEIGHT=${MOTION_WEIGHT:-0}
# Weight of the training-only motion head's displacement loss (0: no head, as segments 1-9).
DISPLACEMENT_WEIGHT=${DISPLACEMENT_WEIGHT:-0}
# The block (1 to LAYERS) whose output the head reads; empty: the last block's.
DISPLACEMENT_LAYER=${DISPLACEMENT_LAYER:-}
# Fraction of clips drawn as one object moving straight without pan (a curriculum for the
# direction words; 0: the whole world, as segments 1-11).
SINGLE_MOVER_FRACTION=${SINGLE_MOVER_FRACTION:-0}
# Fraction of clips drawn as two or three objects moving straight in different directions
# without pan (a curriculum for binding directions to objects; 0: none, as segments 1-26).
MULTI_MOVER_FRACTION=${MULTI_MOVER_FRACTION:-0}
# 1: the DiT takes each pixel's frame, row and column as three extra input channels
# (--position-channels; from a plain INIT_FROM their weights start as a fresh init's). 0: a plain DiT.
POSITION_CHANNELS=${POSITION_CHANNELS:-0}
# Fraction of clips trained at pure noise (sigma ~1) instead of at SHIFT (--top-noise-fraction;
# 0: none, as segments 1-15).
TOP_NOISE_FRACTION=${TOP_NOISE_FRACTION:-0}
# Renders of each scene averaged into the target of the TOP_NOISE_FRACTION clips, which then
# train at sigma 1 (--prior-renders; 0: each clip against itself, as segments 1-28).
PRIOR_RENDERS=${PRIOR_RENDERS:-0}
# Data seed: segments 1-2 used the default 0; each later segment its own.
SEED=${SEED:-0}
ARCH=(--dim "$DIM" --heads "$HEADS" --layers "$LAYERS" --ffn "$FFN" --frames "$FRAMES" --size 32 --lr "$LR" --ema-decay "$EMA"
  --shift "$SHIFT" --motion-weight "$MOTION_WEIGHT" --displacement-weight "$DISPLACEMENT_WEIGHT" --single-mover-fraction "$SINGLE_MOVER_FRACTION"
  --multi-mover-fraction "$MULTI_MOVER_FRACTION" --top-noise-fraction "$TOP_NOISE_FRACTION" --seed "$SEED")
[ -n "$DISPLACEMENT_LAYER" ] && ARCH+=(--displacement-layer "$DISPLACEMENT_LAYER")
[ "$POSITION_CHANNELS" = 1 ] && ARCH+=(--position-channels)
[ "$PRIOR_RENDERS" -gt 1 ] && ARCH+=(--prior-renders "$PRIOR_RENDERS")
mkdir -p "$OUT"
if [ "${FRESH:-0}" = 1 ]; then rm -rf "$WORK"; fi

source "$(dirname "$0")/env.sh"

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
  batch=$BATCH per=$(probe "$BATCH")
  msg="probe: $per s per update at batch $BATCH"
  if [ "${PROBE_DOUBLE:-0}" = 1 ]; then
    large=$(probe $((2 * BATCH)))
    msg="$msg, $large s at batch $((2 * BATCH))"
    if awk -v s="$per" -v l="$large" 'BEGIN{ exit !(l < 1.5 * s) }'; then batch=$((2 * BATCH)) per=$large; fi
  fi
  steps=$(awk -v p="$per" -v b="$BUDGET_S" 'BEGIN{printf "%d", b/p}')
  echo "$msg -> batch $batch, $steps updates in $BUDGET_S s" | tee "$OUT/probe.txt"
fi
# INIT_FROM: a model folder (an earlier export) to start from, with a fresh optimiser.
init=()
[ -n "${INIT_FROM:-}" ] && init=(--init-from "$INIT_FROM")
# The run is cut at TRAIN_S seconds (default: BUDGET_S + 90, also when STEPS is given) if it
# runs long, so the call ends before the lease does; the last checkpoint (every CHECKPOINT_EVERY updates) is
# exported then.
timeout "${TRAIN_S:-$((BUDGET_S + 90))}" "$BIN" train shapes --work "$WORK" --steps "$steps" --checkpoint-every "${CHECKPOINT_EVERY:-100}" \
  --device "$DEVICE" --batch "$batch" "${ARCH[@]}" "${init[@]}" || echo "training stopped early; exporting the last checkpoint"
"$BIN" train export --work "$WORK" --out /tmp/shapes-wan
tar -C /tmp -cf "$OUT/shapes-wan.tar" shapes-wan
cp "$WORK/loss.csv" "$WORK/train_config.json" "$OUT/"
# A first look at the checker score (the model card's numbers come from the CPU run of the same command).
if [ "$EVAL_S" != 0 ]; then
  timeout "$EVAL_S" "$BIN" eval checker --model /tmp/shapes-wan --captions 50 --device "$DEVICE" --out "$OUT/checker.json" || true
fi
ls -la "$OUT"
