#!/usr/bin/env bash
# The main job on the bundled sample corpus (249 State of the Union addresses, 1790-2026), on
# CPU: fetches the base model, builds the tools, and runs the pipeline of pipeline.toml here —
# select-pairs (20 % of the documents held out) → tune-embeddings (two epochs) → apply-model —
# then prints where the outputs are and, on the held-out documents, the base and the tuned
# model's successive-passage MRR@10 and kNN year error. A rerun skips the stages whose outputs
# verify. Outputs go to runs/sample/.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/fetch-model.sh
cargo build --release --workspace
target/release/slurm run-local -c pipeline.toml
target/release/slurm verify runs/sample
