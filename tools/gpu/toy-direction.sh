#!/bin/bash
# Does a small DiT learn the direction words at all, given many more updates than a CPU gives?
# (models/shapes-wan/HISTORY.md, "Toy runs": four toys of 3,000 updates x 8 clips on the CPU learned the colour
# words and not the direction words.) Trains toy DiTs from scratch side by side on one GPU
# (each is bound by per-kernel overhead, so they share it almost for free), and every EVERY_S
# seconds exports each one's last checkpoint and reads it with the caption_sensitivity example
# on the machine's CPU cores: reversed / true above 1.00 means the model uses the direction word.
# The arms (ARMS, any of):
#   plain   the CPU toys' world and recipe at batch 64 (toy 1 of the history)
#   anchor  the same with --first-frame-offset 1 (toy 2: a time anchor)
#   wide    the same at batch 256 (four times the clips per update)
#   position  the same with --position-channels (each pixel's frame, row and column as inputs)
# An arm may end in -sN for noise shift N (e.g. position-s1000), else it trains at SHIFT
# (default 2): with position channels, a shift that puts nearly every sample near sigma 1 is
# what made a toy learn the direction words on the CPU (history, toys 5-8). A final -tN
# trains N% of each batch at pure noise and the rest at the arm's shift (--top-noise-fraction;
# e.g. position-t75, position-s5-t50): does a mixture learn the words and keep the rest?
# Not run by CI.
#
# Usage (device tool, carry [".gpu/hsa.gz", ".gpu/caption_sensitivity.gz"], timeout_s 600;
# both packed by tools/gpu/build-cuda.sh):
#   OUT=$OUT TRAIN_S=530 tools/gpu/toy-direction.sh
# Writes $OUT/<arm>.txt (one line per reading: seconds, update, the four reversed / true
# ratios at sigma 1 0.95 0.8 0.6, the colour ratios; the update is the checkpoint's, read
# just before the export) and $OUT/<arm>.log (the trainer's tail).
set -uo pipefail
OUT=${OUT:-out}
TRAIN_S=${TRAIN_S:-530}
EVERY_S=${EVERY_S:-90}
ARMS=${ARMS:-"plain anchor wide"}
STEPS=${STEPS:-20000}
CLIPS=${CLIPS:-32}
DEVICE=${DEVICE:-cuda}
mkdir -p "$OUT"
source "$(dirname "$0")/env.sh"
sens=${SENS:-/tmp/hsa-bin/caption_sensitivity}
if [ -z "${SENS:-}" ]; then
  gunzip -c .gpu/caption_sensitivity.gz > "$sens" && chmod +x "$sens" || exit 2
fi

common=(--device "$DEVICE" --steps "$STEPS" --lr 1e-3 --seed 21 --dim 64 --heads 2 --layers 3
  --ffn 256 --frames 5 --size 32 --ema-decay 0.999 --motion-weight 4 --single-mover-fraction 1
  --checkpoint-every "${CHECKPOINT_EVERY:-200}")
arm_args() {
  case $1 in
    *-t[0-9]*) echo "--top-noise-fraction $(awk -v n="${1##*-t}" 'BEGIN { print n / 100 }') $(arm_args "${1%-t[0-9]*}")" ;;
    *-s[0-9]*) echo "--shift ${1##*-s} $(arm_args "${1%-s[0-9]*}")" ;;
    plain) echo "--batch 64" ;;
    anchor) echo "--batch 64 --first-frame-offset 1" ;;
    wide) echo "--batch 256" ;;
    position) echo "--batch 64 --position-channels" ;;
    *) echo "unknown arm $1" >&2; exit 2 ;;
  esac
}
shift_of() {
  case $1 in
    *-s[0-9]*) ;;
    *) echo "--shift ${SHIFT:-2}" ;;
  esac
}
start=$(date +%s)
trainers=()
for arm in $ARMS; do
  rm -rf "/tmp/toy-$arm"
  # shellcheck disable=SC2046
  timeout "$TRAIN_S" "$BIN" train shapes --work "/tmp/toy-$arm" "${common[@]}" $(arm_args "$arm") $(shift_of "$arm") \
    > "/tmp/toy-$arm.log" 2>&1 &
  trainers+=($!)
done
training() { for p in "${trainers[@]}"; do kill -0 "$p" 2> /dev/null && return 0; done; return 1; }

# One reading of one arm: export its last checkpoint, then reversed / true and colour / true.
measure() {
  local arm=$1 model=/tmp/toy-model-$1 anchor=0 step
  [ "${arm%%-[st][0-9]*}" = anchor ] && anchor=1
  rm -rf "$model"
  step=$(grep -o '"step":[0-9]*' "/tmp/toy-$arm/checkpoint/state.json" 2> /dev/null | cut -d: -f2)
  "$BIN" train export --work "/tmp/toy-$arm" --out "$model" > /dev/null 2>&1 || return 0
  SIGMAS=1,0.95,0.8,0.6 SINGLE=1 FRAMES=5 ANCHOR=$anchor "$sens" "$model" "$CLIPS" > "/tmp/sens-$arm.txt" 2>&1 || return 0
  awk -v t=$(($(date +%s) - start)) -v s="$step" '
    /^(1|0\.95|0\.8|0\.6) / {r = r " " $2; c = c " " $3}
    END {printf "%5d s  update %6s  reversed%s  colour%s\n", t, s, r, c}' "/tmp/sens-$arm.txt" >> "$OUT/$arm.txt"
}
readings() {
  local m=()
  for arm in $ARMS; do measure "$arm" & m+=($!); done
  wait "${m[@]}"
}
while training; do
  sleep "$EVERY_S"
  training && readings
done
readings
for arm in $ARMS; do
  tail -n 5 "/tmp/toy-$arm.log" > "$OUT/$arm.log"
  cp "/tmp/toy-$arm/loss.csv" "$OUT/$arm-loss.csv" 2> /dev/null
  cat "$OUT/$arm.txt" 2> /dev/null
done
cp "/tmp/sens-${ARMS##* }.txt" "$OUT/" 2> /dev/null
ls -la "$OUT"
