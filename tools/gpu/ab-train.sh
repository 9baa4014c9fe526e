#!/bin/bash
# A/B of one training setting on the GPU machine: one arm per value in VALUES of the
# train-shapes.sh variable VAR (default: the motion head's DISPLACEMENT_WEIGHT), each STEPS
# updates from the same model (INIT_FROM) with the same data seed, one after the other (two
# trainers at once ran out of memory). The other settings are the bundled model's recipe
# (shift 2, motion weight 4, EMA 0.995, no motion head unless DISPLACEMENT_WEIGHT is set); VAR
# overrides one of them. Not run by CI.
#
# Each arm's export is also scored on the single-mover split (one object moving straight, no
# pan: does it follow the direction words where nothing else competes), and read by the
# caption_sensitivity example on the machine's CPU cores: whether reversing a caption's direction raises the model's error (the seventh bundled
# model: ratio 1.00, it ignores the direction words), and, in an arm that trains the motion
# head, whether it raises the head's error. That is far more sensitive to a model starting to
# use direction than the checker's direction score, which moves by a few hundredths between
# noise seeds.
#
# Usage (device tool, carry [".gpu/hsa.gz", ".gpu/caption_sensitivity.gz"], timeout_s 600;
# both packed by tools/gpu/build-cuda.sh):
#   OUT=$OUT VAR=DISPLACEMENT_WEIGHT VALUES="0 3" STEPS=380 EVAL_S=30 tools/gpu/ab-train.sh
#   OUT=$OUT VAR=SHIFT VALUES="2 5" STEPS=380 EVAL_S=30 tools/gpu/ab-train.sh
#   OUT=$OUT DISPLACEMENT_WEIGHT=3 VAR=DISPLACEMENT_LAYER VALUES="6 3" STEPS=380 EVAL_S=30 tools/gpu/ab-train.sh
#   OUT=$OUT VAR=SINGLE_MOVER_FRACTION VALUES="0 0.5" STEPS=380 EVAL_S=30 tools/gpu/ab-train.sh
#   OUT=$OUT VAR=POSITION_CHANNELS VALUES="0 1" SHIFT=... STEPS=380 EVAL_S=30 tools/gpu/ab-train.sh
# Writes $OUT/<value>/{shapes-wan.tar.gz, checker.json, report.txt} (three of the eight files
# the device tool brings back, per arm). The first call took 563 s on an H100 (eleventh
# session): 3 minutes of training per arm, the rest start-up, export, checker (16-21 s) and
# caption_sensitivity.
set -euo pipefail
OUT=${OUT:-out}
VAR=${VAR:-DISPLACEMENT_WEIGHT}
VALUES=${VALUES:-"0 3"}
STEPS=${STEPS:-380}
source "$(dirname "$0")/env.sh"
sens=/tmp/hsa-bin/caption_sensitivity
mkdir -p /tmp/hsa-bin
gunzip -c .gpu/caption_sensitivity.gz > "$sens" && chmod +x "$sens"
for value in $VALUES; do
  arm=/tmp/arm-$value
  mkdir -p "$OUT/$value"
  rm -rf /tmp/shapes-wan  # train-shapes.sh exports there; never read an earlier arm's model
  settings=(OUT="$arm" WORK="$arm-work" STEPS="$STEPS" EVAL_S="${EVAL_S:-30}" SHIFT="${SHIFT:-2}" MOTION_WEIGHT=4
    EMA=0.995 LR="${LR:-4e-4}" SEED="${SEED:-11}" INIT_FROM="${INIT_FROM:-models/shapes-wan}"
    DISPLACEMENT_WEIGHT="${DISPLACEMENT_WEIGHT:-0}" DISPLACEMENT_LAYER="${DISPLACEMENT_LAYER:-}"
    SINGLE_MOVER_FRACTION="${SINGLE_MOVER_FRACTION:-0}" POSITION_CHANNELS="${POSITION_CHANNELS:-0}"
    TOP_NOISE_FRACTION="${TOP_NOISE_FRACTION:-0}" BIN="$BIN" "$VAR=$value")
  env "${settings[@]}" tools/gpu/train-shapes.sh > "$arm.log" 2>&1 || echo "arm $value: train-shapes.sh failed" >> "$arm.log"
  gzip -1 -c "$arm/shapes-wan.tar" > "$OUT/$value/shapes-wan.tar.gz" || true
  cp "$arm/checker.json" "$OUT/$value/" 2>/dev/null || true
  head=()  # the motion head's folder, where this arm trained one
  grep -q '"displacement_weight": 0.0' "$arm-work/train_config.json" 2>/dev/null || head=("$arm-work")
  { tail -n 20 "$arm.log"; echo "--- loss.csv (last 3)"; tail -n 3 "$arm/loss.csv"
    echo "--- checker, single-mover split (48 captions)"
    timeout "${EVAL_S:-30}" "$BIN" eval checker --model /tmp/shapes-wan --split single-mover --captions 48 \
      --device "${DEVICE:-cuda}" --out "/tmp/single-$value.json" | tail -n 3
    echo "--- caption_sensitivity"; "$sens" /tmp/shapes-wan "${SENS_CLIPS:-32}" "${head[@]}"; } > "$OUT/$value/report.txt" 2>&1 || true
done
ls -la "$OUT"/*
