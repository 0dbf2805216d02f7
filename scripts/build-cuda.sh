#!/usr/bin/env bash
# Builds and links the CUDA binaries (apply-model and tune-embeddings with --features cuda,
# kernels for Hopper, sm_90) on a machine without a GPU or a CUDA install, so that they can be
# carried to a GPU node that has no Rust toolchain. Everything comes from PyPI (NVIDIA's wheels):
#   - the compiler (nvcc, cicc, crt, cccl, runtime headers), as scripts/check-cuda.sh;
#   - the CUDA runtime, cuBLAS, cuBLASLt, cuRAND and NVRTC, the CUDA 13.0 releases, so the link checks every
#     symbol the binaries use against the real libraries;
#   - not the driver (libcuda): NVIDIA does not ship it on PyPI. As NVIDIA's own lib/stubs/,
#     a stub libcuda.so (SONAME libcuda.so.1) is generated here exporting exactly the driver
#     symbols the binaries reference (each returns CUDA_ERROR_STUB_LIBRARY, 34). It is used only
#     at link time; at run time the node's driver provides libcuda.so.1.
#
# Why linking and not cudarc's run-time loading (dlopen): candle 0.11 enables cudarc's
# `dynamic-linking` feature, and cudarc refuses `dynamic-loading` beside it (its build script
# panics on both), so run-time loading would need a patched candle. Linked, the binaries name
# their libraries in NEEDED (listed and checked below) and fail at start, with the loader naming
# the missing library, instead of in the middle of a run.
#
# At run time the binaries need, in LD_LIBRARY_PATH (or the system's library path):
#   libcuda.so.1 (the driver), libcudart.so.13, libcublas.so.13, libcublasLt.so.13, libcurand.so.10, libnvrtc.so.13
# From a cluster's CUDA 13 module: `module load cuda` sets it. From a PyTorch install's
# nvidia-* wheels (CUDA 13 builds):
#   export LD_LIBRARY_PATH=$(python3 -c 'import os, nvidia; print(os.path.dirname(nvidia.__path__[0]))')/nvidia/cu13/lib:$LD_LIBRARY_PATH
# (torch's cu13 wheels ship cuBLAS and NVRTC but not cuRAND; candle opens a cuRAND generator
# with the device, so add `pip install nvidia-curand` there, or a CUDA module.)
#
# Outputs: target/cuda/release/{apply-model,tune-embeddings} (with line tables) and stripped
# copies in target/cuda/dist/ to carry. Prints their sizes and their NEEDED libraries, and fails
# if a binary needs a library outside the expected list.
#
# Usage: scripts/build-cuda.sh        (CUDA_COMPUTE_CAP overrides the target GPU, e.g. 80)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
toolkit=$root/target/cuda-toolkit
cuda=$toolkit/nvidia/cu13
# One CUDA release for all: cudarc picks its bindings from nvcc's version.
WHEELS=(nvidia-cuda-nvcc==13.0.88 nvidia-cuda-crt==13.0.88 nvidia-nvvm==13.0.88
        nvidia-cuda-runtime==13.0.96 nvidia-cuda-cccl==13.0.85
        nvidia-cublas==13.0.0.19 nvidia-curand==10.4.0.35 nvidia-cuda-nvrtc==13.0.48)
LIBS=(cudart:13 cublas:13 cublasLt:13 curand:10 nvrtc:13)
# What a linked binary may need: the CUDA libraries above, the driver and glibc's.
ALLOWED="libcuda.so.1 libcudart.so.13 libcublas.so.13 libcublasLt.so.13 libcurand.so.10 libnvrtc.so.13
libc.so.6 libm.so.6 libgcc_s.so.1 libstdc++.so.6 ld-linux-x86-64.so.2"
BINS=(apply-model tune-embeddings)

if [ ! -f "$toolkit/.complete" ]; then
  python=$(command -v python3 || command -v python) || { echo "build-cuda: python3 with pip is required" >&2; exit 1; }
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  echo "build-cuda: downloading the CUDA 13.0 compiler and libraries from PyPI (~680 MB)" >&2
  "$python" -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: -d "$tmp" "${WHEELS[@]}"
  rm -rf "$toolkit.partial"
  for w in "$tmp"/*.whl; do "$python" -m zipfile -e "$w" "$toolkit.partial"; rm -f "$w"; done
  chmod +x "$toolkit.partial"/nvidia/cu13/bin/* "$toolkit.partial"/nvidia/cu13/nvvm/bin/*
  mkdir -p "$toolkit.partial/nvidia/cu13/lib/stubs"
  touch "$toolkit.partial/.complete"
  rm -rf "$toolkit"
  mv "$toolkit.partial" "$toolkit"
fi

# The linker looks for libX.so; the wheels hold only libX.so.N (as a CUDA install's lib/).
# Every run, so a toolkit unpacked by an earlier version of this script gets them too.
for l in "${LIBS[@]}"; do ln -sf "lib${l%%:*}.so.${l##*:}" "$cuda/lib/lib${l%%:*}.so"; done

# CUDA_ROOT: candle's kernel build finds nvcc there and cudarc adds lib/ and lib/stubs/ to the
# link search path.
export PATH=$cuda/bin:$PATH CUDA_ROOT=$cuda CUDA_COMPUTE_CAP=${CUDA_COMPUTE_CAP:-90}
# The linker's own search path too, in case cudarc's build script ran before lib/stubs existed
# (scripts/check-cuda.sh shares the target folder).
export LIBRARY_PATH=$cuda/lib/stubs:$cuda/lib${LIBRARY_PATH:+:$LIBRARY_PATH}
nvcc --version | tail -2 >&2
cd "$root"
cargo=(cargo build --release --features cuda --target-dir target/cuda)

# 1. Everything but the final link: the libraries' object code says which driver symbols the
#    binaries reference.
"${cargo[@]}" -p apply-model -p tune-embeddings --lib
deps=target/cuda/release/deps
symbols=$(for r in "$deps"/lib*.rlib; do nm -u --format=just-symbols "$r" 2>/dev/null; done \
  | grep -E '^cu[A-Z][A-Za-z0-9_]*$' | sort -u)
[ -n "$symbols" ] || { echo "build-cuda: no driver symbols found in $deps" >&2; exit 1; }

# 2. The stub driver library: every referenced cu* function returns CUDA_ERROR_STUB_LIBRARY.
stubs=$cuda/lib/stubs
{
  echo "/* Generated by scripts/build-cuda.sh: link-time stand-in for the driver's libcuda.so.1. */"
  for s in $symbols; do echo "int $s(void) { return 34; }"; done
} > "$stubs/libcuda.c"
cc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$stubs/libcuda.so" "$stubs/libcuda.c"
mkdir -p "$stubs/run"
ln -sf ../libcuda.so "$stubs/run/libcuda.so.1"
echo "build-cuda: stub libcuda.so.1 with $(echo "$symbols" | wc -l) driver symbols" >&2

# 3. Link.
"${cargo[@]}" -p apply-model -p tune-embeddings

# 4. Stripped copies to carry; sizes; dynamic dependencies.
mkdir -p target/cuda/dist
status=0
for b in "${BINS[@]}"; do
  strip -o "target/cuda/dist/$b" "target/cuda/release/$b"
  needed=$(readelf -d "target/cuda/release/$b" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p')
  printf 'build-cuda: %s: %s bytes stripped (%s with line tables); NEEDED: %s\n' "$b" \
    "$(stat -c %s "target/cuda/dist/$b")" "$(stat -c %s "target/cuda/release/$b")" \
    "$(echo $needed)" >&2
  for n in $needed; do
    grep -qxF "$n" <<<"$(tr ' ' '\n' <<<"$ALLOWED")" || {
      echo "build-cuda: $b needs $n, which is not in the expected list ($ALLOWED)" >&2
      status=1
    }
  done
  # It starts (the loader binds every symbol at start: Rust links with -z now) and says it is
  # a CUDA build; the stub stands in for the driver only for this check.
  version=$(LD_LIBRARY_PATH=$stubs/run:$cuda/lib "target/cuda/release/$b" --version) || status=1
  grep -q 'features: cuda' <<<"$version" || { echo "build-cuda: $b --version: $version" >&2; status=1; }
done
[ "$status" = 0 ] || exit 1
echo "build-cuda: linked for sm_$CUDA_COMPUTE_CAP → target/cuda/dist/ ($(du -cb target/cuda/dist/* | tail -1 | cut -f1) bytes in all)" >&2
