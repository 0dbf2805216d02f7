#!/usr/bin/env bash
# The main job on the bundled sample corpus (249 State of the Union addresses, 1790-2026), on
# CPU: fetches the base model, builds the tools, and runs the pipeline stages that exist.
# Outputs go to runs/sample/.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/fetch-model.sh
cargo build --release --workspace

run=runs/sample
mkdir -p "$run"
echo "==> select-pairs: training pairs (no paraphrase endpoint configured: successive pairs only)" >&2
target/release/select-pairs \
  --chunks data/sample/chunks.parquet \
  --no-paraphrase \
  --out "$run/pairs/pairs.parquet" \
  --report "$run/pairs/report.json"
echo "==> apply-model: embedding data/sample/chunks.parquet with the base model" >&2
target/release/apply-model \
  --model models/all-MiniLM-L6-v2 \
  --chunks data/sample/chunks.parquet \
  --out "$run/embeddings-base"
echo "==> outputs in $run/ (each folder has a MANIFEST.json)" >&2
