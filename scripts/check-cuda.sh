#!/usr/bin/env bash
# Keeps `--features cuda` compiling on machines without a GPU or a CUDA install: fetches
# NVIDIA's CUDA 13.0 compiler and headers from PyPI (nvcc, cicc, crt, cccl, runtime headers;
# about 100 MB, unpacked under target/cuda-toolkit/), lets candle's build script compile its
# kernels for Hopper (sm_90), and lints apply-model and tune-embeddings with the feature on.
#
# It checks, it does not link: scripts/build-cuda.sh builds and links the binaries (with
# cuBLAS/cuRAND/NVRTC from PyPI and a generated stub for the driver). On a cluster, you can
# also build there:
#   module load cuda   # or however the site provides nvcc
#   CUDA_COMPUTE_CAP=90 cargo build --release --features cuda -p apply-model -p tune-embeddings
#
# Usage: scripts/check-cuda.sh        (CUDA_COMPUTE_CAP overrides the target GPU, e.g. 80)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
toolkit=$root/target/cuda-toolkit
cuda=$toolkit/nvidia/cu13
WHEELS=(nvidia-cuda-nvcc==13.0.88 nvidia-cuda-crt==13.0.88 nvidia-nvvm==13.0.88
        nvidia-cuda-runtime==13.0.96 nvidia-cuda-cccl==13.0.85)

if [ ! -x "$cuda/bin/nvcc" ] || [ ! -x "$cuda/nvvm/bin/cicc" ] || [ ! -f "$cuda/include/crt/host_config.h" ]; then
  python=$(command -v python3 || command -v python) || { echo "check-cuda: python3 with pip is required" >&2; exit 1; }
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  echo "check-cuda: downloading the CUDA 13.0 compiler from PyPI" >&2
  "$python" -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: -d "$tmp" "${WHEELS[@]}"
  rm -rf "$toolkit.partial"
  for w in "$tmp"/*.whl; do "$python" -m zipfile -e "$w" "$toolkit.partial"; done
  chmod +x "$toolkit.partial"/nvidia/cu13/bin/* "$toolkit.partial"/nvidia/cu13/nvvm/bin/*
  rm -rf "$toolkit"
  mv "$toolkit.partial" "$toolkit"
fi

export PATH=$cuda/bin:$PATH CUDA_ROOT=$cuda CUDA_COMPUTE_CAP=${CUDA_COMPUTE_CAP:-90}
nvcc --version | tail -2 >&2
cd "$root"
cargo clippy --release --features cuda -p apply-model -p tune-embeddings --target-dir target/cuda -- -D warnings
echo "check-cuda: --features cuda compiles (kernels for sm_$CUDA_COMPUTE_CAP)" >&2
