#!/bin/bash
# Builds `hsa` with `--features cuda` on a machine with no GPU and no CUDA install, and packs it
# for the GPU machine as .gpu/hsa.gz (ignored by git; carry it with the device tool). Not run by
# CI. The why of each step is in rust-stack.md §3; in short:
# 1. nvcc, the CUDA headers and the link-time libraries come from NVIDIA's PyPI wheels, pinned to
#    CUDA 13.0 (the GPU machines' driver rejects PTX from a newer nvcc), in a venv (CU13_VENV);
# 2. the linker wants libcuda.so, which only a driver install has: a stub with the driver
#    symbols the build references stands in (soname libcuda.so.1, so at run time the real
#    driver is loaded);
# 3. cargo builds with CUDA_* pointing at the wheels; the binary is stripped and gzipped (about
#    70 MB and 17 MB: the device tool carries at most 64 MiB).
# A first build takes about 20 minutes on 2 cores (nvcc over candle's kernels), later ones a
# minute. Usage: tools/gpu/build-cuda.sh    (CUDA_COMPUTE_CAP=90 for Hopper, the default)
set -euo pipefail
cd "$(dirname "$0")/../.."
VENV=${CU13_VENV:-$HOME/.cache/hsa/cu13-venv}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target/cuda}
export CUDA_COMPUTE_CAP=${CUDA_COMPUTE_CAP:-90}

if [ ! -x "$VENV/bin/python" ]; then python3 -m venv "$VENV"; fi
site=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
CU=$site/nvidia/cu13
if [ ! -x "$CU/bin/nvcc" ]; then
  "$VENV/bin/pip" install -q nvidia-cuda-nvcc==13.0.88 nvidia-cuda-runtime==13.0.96 "nvidia-cuda-crt==13.0.*" \
    "nvidia-cuda-cccl==13.0.*" "nvidia-nvvm==13.0.*" "nvidia-cublas==13.0.*" "nvidia-curand==10.4.0.*" \
    "nvidia-cuda-nvrtc==13.0.*"
fi
for lib in cublas.so.13 cublasLt.so.13 curand.so.10 nvrtc.so.13 cudart.so.13; do
  ln -sf "lib$lib" "$CU/lib/lib${lib%%.so.*}.so"
done
export PATH=$CU/bin:$PATH CUDA_ROOT=$CU CUDA_HOME=$CU CUDA_PATH=$CU CUDA_TOOLKIT_ROOT_DIR=$CU LIBRARY_PATH=$CU/lib

if [ ! -f "$CU/lib/libcuda.so" ]; then
  # Everything up to the final link builds without libcuda; the driver symbols the build needs
  # are the `cu*` functions the compiled cudarc crate leaves undefined.
  cargo build --release -p hsa-cli --features cuda 2>/dev/null || true
  rlibs=$(ls "$CARGO_TARGET_DIR"/release/deps/libcudarc-*.rlib)
  syms=$(nm -u $rlibs 2>/dev/null | awk '$1 == "U" && $2 ~ /^cu[A-Z]/ {print $2}' | sort -u)
  [ -n "$syms" ] || { echo "no cu* symbols found in $rlibs" >&2; exit 1; }
  stub=$(mktemp -d)/cuda_stub.c
  for s in $syms; do echo "void $s(void) {}"; done > "$stub"
  cc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$CU/lib/libcuda.so" "$stub"
  echo "libcuda stub: $(echo "$syms" | wc -l) symbols"
fi

cargo build --release -p hsa-cli --features cuda
mkdir -p .gpu
strip -o .gpu/hsa "$CARGO_TARGET_DIR/release/hsa"
gzip -9 -f .gpu/hsa
# The caption_sensitivity diagnostic runs on the GPU machine's CPU cores (tools/gpu/ab-train.sh).
CARGO_TARGET_DIR=target cargo build --release -p hsa-shapes --example caption_sensitivity
strip -o .gpu/caption_sensitivity target/release/examples/caption_sensitivity
gzip -9 -f .gpu/caption_sensitivity
ls -la .gpu/hsa.gz .gpu/caption_sensitivity.gz
echo "carry [\".gpu/hsa.gz\", \".gpu/caption_sensitivity.gz\"] to the device machine; the tools/gpu scripts unpack them"
