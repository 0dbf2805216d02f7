#!/usr/bin/env bash
# The GPU check: one command on a GPU machine (PyTorch, sentence-transformers, pyarrow; no Rust,
# no network), under 8 minutes on an H200. It measures the CUDA build of apply-model and
# tune-embeddings against the reference file and beside sentence-transformers, prints a table and
# writes everything to $OUT/gpu-check.json (bench/gpu/out/ without $OUT):
#   1. parity: the reference texts embedded with --device cuda:0 in f32 (cosine ≥ 0.9999 to the
#      reference, else the run fails), bf16 and f16 (cosine reported);
#   2. training: 50 steps of tune-embeddings, batch 64 × 256 tokens on the bundled sample's pairs,
#      f32 and bf16, beside sentence-transformers (bf16 autocast, the same pairs, seed and
#      learning-rate schedule): pairs/s, peak GPU memory, both loss curves in one table;
#   3. embedding: the bundled corpus with apply-model (f16 and f32) vs sentence-transformers'
#      encode in fp16: texts/s and the cosine between the two sides.
#
# What it needs beside this checkout: the CUDA binaries (scripts/build-cuda.sh →
# target/cuda/dist/), select-pairs (a CPU build; pairs are made on the spot) and the base model
# (models/all-MiniLM-L6-v2) — together over one device call's 64 MiB: bench/gpu/carry.sh packs
# them into parts and prints the calls — and the CUDA libraries: a CUDA 13 module's
# LD_LIBRARY_PATH, or PyTorch's cu13 wheels, which this script adds to it.
#
# --dry: the same script end to end on CPU with a tiny configuration (3 training steps of 8 × 64
# tokens, 200 chunks), with the CPU build in target/release. Its numbers mean nothing; it checks
# the logic, and CI runs it. Without sentence-transformers (CI has no torch) that side is
# recorded as skipped and everything on ours still runs.
#
# Usage: bench/gpu/run.sh [--dry]
#   STRATA_BIN  folder of apply-model and tune-embeddings [target/cuda/dist; --dry: target/release]
#   CPU_BIN     folder of select-pairs [target/release, else STRATA_BIN]
#   MODEL       base model folder [models/all-MiniLM-L6-v2]
set -euo pipefail
cd "$(dirname "$0")/../.."
dry=
[ "${1:-}" = "--dry" ] && dry=--dry
if [ -n "$dry" ]; then bin=${STRATA_BIN:-target/release}; else bin=${STRATA_BIN:-target/cuda/dist}; fi
# On a GPU machine with PyTorch's CUDA 13 wheels (and no CUDA module loaded), their libraries.
if [ -z "$dry" ]; then
  wheels=$(python3 -c 'import os, nvidia; print(os.path.dirname(nvidia.__path__[0]))' 2>/dev/null || true)
  if [ -n "$wheels" ] && [ -d "$wheels/nvidia/cu13/lib" ]; then
    export LD_LIBRARY_PATH=$wheels/nvidia/cu13/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
  fi
fi
cpu_bin=${CPU_BIN:-target/release}
[ -x "$cpu_bin/select-pairs" ] || cpu_bin=$bin
out=${OUT:-bench/gpu/out}
mkdir -p "$out"
exec python3 bench/gpu/gpu_check.py $dry --bin "$bin" --cpu-bin "$cpu_bin" \
  --model "${MODEL:-models/all-MiniLM-L6-v2}" --out "$out"
