# Sourced by the tools/gpu scripts on the GPU machine: finds the CUDA libraries `hsa` links to
# and the `hsa` binary to run.
#
# Libraries: cuBLAS, cuRAND, NVRTC and the runtime come from the machine's PyTorch wheels, the
# driver (libcuda.so.1) from its driver folder; none of them is on the default search path.
# Binary: BIN, default `.gpu/hsa.gz` as packed by tools/gpu/build-cuda.sh (carried to the device
# machine), else ./hsa. A gzipped binary is unpacked to /tmp first: the carry limit is 64 MiB
# and the stripped CUDA binary is about 70 MB, 17 MB gzipped.
libdirs=$(find /opt /usr/local /usr/lib /usr/lib64 \( -name libcublasLt.so.13 -o -name libcurand.so.10 \
  -o -name libnvrtc.so.13 -o -name libcudart.so.13 -o -name libcuda.so.1 \) 2>/dev/null | xargs -r -n1 dirname | sort -u | paste -sd:)
export LD_LIBRARY_PATH="$libdirs:${LD_LIBRARY_PATH:-}"
if [ -z "${BIN:-}" ]; then
  if [ -f .gpu/hsa.gz ]; then BIN=.gpu/hsa.gz; else BIN=./hsa; fi
fi
if [[ "$BIN" == *.gz ]]; then
  mkdir -p /tmp/hsa-bin
  gunzip -c "$BIN" > /tmp/hsa-bin/hsa && chmod +x /tmp/hsa-bin/hsa || { echo "cannot unpack $BIN" >&2; exit 2; }
  BIN=/tmp/hsa-bin/hsa
fi
if ldd "$BIN" | grep "not found" >&2; then echo "$BIN: libraries missing (above)" >&2; exit 2; fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
