#!/usr/bin/env bash
# tune-embeddings vs sentence-transformers (same pairs, settings and seeds) and TF-IDF + SVD on
# the held-out documents of the bundled sample: see bench/tuning_vs_st.py. Needs torch and
# sentence-transformers (pip install sentence-transformers scikit-learn), which the test
# command does not install. Extra arguments go to the script (e.g. --epochs 2 --seeds 1 2 3).
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -c 'import sentence_transformers, sklearn, datasets, accelerate' || {
  echo "needs torch, sentence-transformers, scikit-learn, datasets and accelerate (pip install sentence-transformers scikit-learn datasets accelerate)" >&2
  exit 2
}
scripts/fetch-model.sh
cargo build --release -p select-pairs -p tune-embeddings
out=runs/tuning-bench
mkdir -p "$out"
target/release/select-pairs --chunks data/sample/chunks.parquet --no-paraphrase --seed 42 \
  --out "$out/pairs.parquet" --held-out-docs "$out/held-out-docs.txt"
python3 bench/tuning_vs_st.py --pairs "$out/pairs.parquet" --held-out-docs "$out/held-out-docs.txt" \
  --chunks data/sample/chunks.parquet --base-model models/all-MiniLM-L6-v2 --json "$out/results.json" "$@"
