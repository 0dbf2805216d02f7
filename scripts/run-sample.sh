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
echo "==> tune-embeddings: one short epoch on CPU (MNRL, batch 32, 128 tokens)" >&2
target/release/tune-embeddings \
  --base-model models/all-MiniLM-L6-v2 \
  --pairs "$run/pairs/pairs.parquet" \
  --out "$run/model" \
  --epochs 1 --batch-size 32 --lr 5e-5 --eval-fraction 0.2

echo "==> apply-model: embedding data/sample/chunks.parquet with the tuned model" >&2
target/release/apply-model \
  --model "$run/model" \
  --chunks data/sample/chunks.parquet \
  --out "$run/embeddings"

python3 - "$run" <<'PY'
import json, sys
run = sys.argv[1]
evals = [json.loads(l) for l in open(f"{run}/model/metrics.jsonl") if '"eval"' in l]
before, after = evals[0]["metrics"], json.load(open(f"{run}/model/training_args.json"))["best"]
print(f"held-out MRR@10: base model {before['mrr@10']:.4f} -> tuned {after['value']:.4f} ({after['metric']}, step {after['step']})", file=sys.stderr)
PY
echo "==> outputs in $run/: pairs/, model/ (sentence-transformers folder), embeddings/ (each with MANIFEST.json or training_args.json)" >&2
