#!/bin/bash
# The bundled model's two phases in one device call (models/shapes-wan/HISTORY.md, segments 18-22): a prior phase
# that teaches the direction words (single movers, 5 frames, pure noise), then a mixture phase on
# the whole world that brings back the lower noise levels while part of each batch stays at pure
# noise. Scores each model with the on-device checker, with the models in BASELINES for
# comparison. Not run by CI.
#
# Usage (device tool; carry [".gpu/hsa.gz"] and any model folders named below, timeout_s 600):
#   OUT=$OUT PRIOR_FROM=.gpu/seg18 BASELINES="models/shapes-wan .gpu/seg18" tools/gpu/two-phase.sh
# PRIOR_FROM: where the prior phase starts (a plain model is widened by the position channels).
# PRIOR_S / MIX_S: training budgets in seconds; PRIOR_SINGLE / PRIOR_MULTI: the prior phase's
# share of single movers (default 1, as segments 18-20) and of multi movers (two or three
# straight movers in different directions, for binding directions to objects; default 0);
# MIX_TOP / MIX_SINGLE / MIX_MULTI: the mixture's share of each batch at pure noise, of single
# movers and of multi movers; PRIOR_RENDERS: with more than 1, every prior-phase clip trains at
# sigma 1 against the mean of that many renders of its scene instead of at shift 1000, and
# MIX_PRIOR_RENDERS does the same for the mixture's MIX_TOP share (--prior-renders; segment 29
# in HISTORY.md). Writes to $OUT (the device tool brings back at
# most 8 files): prior.tar and mix.tar (exported models), meta.tar (loss curves, configs,
# probes, checker reports) and the log on stdout.
set -uo pipefail
OUT=${OUT:-out}
HERE=$(dirname "$0")
PRIOR_FROM=${PRIOR_FROM:-models/shapes-wan}
PRIOR_S=${PRIOR_S:-140}
MIX_S=${MIX_S:-200}
MIX_TOP=${MIX_TOP:-0.5}
MIX_SINGLE=${MIX_SINGLE:-0.25}
MIX_MULTI=${MIX_MULTI:-0}
PRIOR_SINGLE=${PRIOR_SINGLE:-1}
PRIOR_MULTI=${PRIOR_MULTI:-0}
PRIOR_RENDERS=${PRIOR_RENDERS:-0}
MIX_PRIOR_RENDERS=${MIX_PRIOR_RENDERS:-0}
# Every prior-phase clip at the top of the noise: shift 1000, or sigma 1 with averaged targets.
PRIOR_NOISE=(SHIFT=1000)
[ "$PRIOR_RENDERS" -gt 1 ] && PRIOR_NOISE=(SHIFT=1 TOP_NOISE_FRACTION=1 PRIOR_RENDERS="$PRIOR_RENDERS")
EVAL_S=${EVAL_S:-40}
META=/tmp/two-phase-meta
rm -rf /tmp/prior-model /tmp/shapes-wan /tmp/prior-out /tmp/mix-out "$META"
mkdir -p "$OUT" "$META"

source "$HERE/env.sh"
for b in ${BASELINES:-}; do
  name=$(basename "$b")
  timeout "$EVAL_S" "$BIN" eval checker --model "$b" --captions 50 --device "${DEVICE:-cuda}" --out "$META/checker-$name.json" 2>&1 |
    grep -a "checker on" | sed "s/^/$name: /"
done
# Keeps a phase's outputs (train-shapes.sh ran its checker on the exported model) and prints its score.
keep() { # phase
  cp "/tmp/$1-out/shapes-wan.tar" "$OUT/$1.tar"
  for f in loss.csv train_config.json probe.txt checker.json; do cp "/tmp/$1-out/$f" "$META/$1-$f" 2>/dev/null || true; done
  grep -a "checker on" "$META/$1.log" | sed "s/^/$1: /"
}

# Prior phase: single (and multi) movers, 5 frames, every sample at sigma ~1.
env "${PRIOR_NOISE[@]}" OUT=/tmp/prior-out POSITION_CHANNELS=1 SINGLE_MOVER_FRACTION="$PRIOR_SINGLE" MULTI_MOVER_FRACTION="$PRIOR_MULTI" FRAMES=5 MOTION_WEIGHT=4 \
  EMA=0.99 LR=${PRIOR_LR:-1e-3} SEED=20 INIT_FROM="$PRIOR_FROM" WORK=/tmp/prior FRESH=1 BUDGET_S="$PRIOR_S" \
  TRAIN_S=$((PRIOR_S + 30)) EVAL_S="$EVAL_S" BIN="$BIN" "$HERE/train-shapes.sh" >"$META/prior.log" 2>&1
tail -c 400 "$META/prior.log"
mv /tmp/shapes-wan /tmp/prior-model
keep prior

# Mixture phase: the whole world at 9 frames, MIX_TOP of each batch at pure noise.
OUT=/tmp/mix-out POSITION_CHANNELS=1 SINGLE_MOVER_FRACTION="$MIX_SINGLE" MULTI_MOVER_FRACTION="$MIX_MULTI" TOP_NOISE_FRACTION="$MIX_TOP" PRIOR_RENDERS="$MIX_PRIOR_RENDERS" \
  SHIFT=2 MOTION_WEIGHT=4 EMA=0.99 LR=${MIX_LR:-4e-4} SEED=21 INIT_FROM=/tmp/prior-model WORK=/tmp/mix \
  FRESH=1 BUDGET_S="$MIX_S" TRAIN_S=$((MIX_S + 30)) EVAL_S="$EVAL_S" BIN="$BIN" "$HERE/train-shapes.sh" >"$META/mix.log" 2>&1
tail -c 400 "$META/mix.log"
keep mix
tar -C "$META" -cf "$OUT/meta.tar" .
ls -la "$OUT"
