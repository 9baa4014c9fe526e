#!/bin/bash
# Where the GPU time of a shapes training step goes. Not run by CI, and not run yet: written
# after a session measured 0.41 s per update at batch 64 on an H200 (about 1% of the chip)
# with no profile left to run.
#
# Usage: tools/gpu/build-cuda.sh here (writes .gpu/hsa.gz), then on the GPU machine
# (device tool: carry [".gpu/hsa.gz"]):
#   OUT=$OUT tools/gpu/profile-train.sh
# 1. Times STEPS updates without a profiler (seconds per update from loss.csv).
# 2. Runs 2 updates under Nsight Compute, recording only each kernel's duration, and sums the
#    durations per kernel name (tools/gpu/kernel_summary.py). If the kernels add up to far
#    less than a step's wall time, the step is bound by the host (allocation, synchronisation,
#    launches), not by a kernel. Nsight Systems is not installed on these machines; ncu is.
set -euo pipefail
OUT=${OUT:-out}
BATCH=${BATCH:-64}
STEPS=${STEPS:-12}
ARCH=(--dim "${DIM:-256}" --heads "${HEADS:-4}" --layers "${LAYERS:-6}" --ffn "${FFN:-1024}" --frames "${FRAMES:-9}" --size 32 --batch "$BATCH")
mkdir -p "$OUT"
source "$(dirname "$0")/env.sh"

rm -rf /tmp/profile-plain
"$BIN" train shapes --work /tmp/profile-plain --steps "$STEPS" --checkpoint-every 100000 --device cuda "${ARCH[@]}" >/dev/null
awk -F, -v p="$STEPS" '$1==int(p/3){a=$5} $1==p{b=$5} END{printf "plain: %.4f s per update at batch %d\n", (b-a)/(p-int(p/3)), '"$BATCH"'}' \
  /tmp/profile-plain/loss.csv | tee "$OUT/plain.txt"

NCU=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1 || true)
if [ -z "$NCU" ]; then echo "no ncu on this machine"; exit 0; fi
rm -rf /tmp/profile-ncu
timeout "${NCU_S:-300}" "$NCU" --clock-control none --metrics gpu__time_duration.sum --csv --log-file "$OUT/kernels.csv" \
  "$BIN" train shapes --work /tmp/profile-ncu --steps 2 --checkpoint-every 100000 --device cuda "${ARCH[@]}" >/dev/null || true
python3 "$(dirname "$0")/kernel_summary.py" "$OUT/kernels.csv" --steps 2 | tee "$OUT/kernel_summary.txt"
