#!/usr/bin/env bash
# The main job on the bundled sample corpus (249 State of the Union addresses, 1790-2026), on
# CPU: fetches the base model, builds the tools, and runs the pipeline of pipeline.toml here —
# select-pairs (20 % of the documents held out) → tune-embeddings (two epochs) → apply-model →
# precocity → report — then prints where the outputs are, on the held-out documents the base and
# the tuned model's successive-passage MRR@10 and kNN year error, the most precocious addresses
# and the report's page. A rerun skips the stages whose outputs verify. Outputs go to
# runs/sample/.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/fetch-model.sh
cargo build --release --workspace
page=$(target/release/slurm run-local -c pipeline.toml)
target/release/slurm verify runs/sample

# The most precocious documents, ranked as the precocity stage and the report rank them (the
# setting its manifest records as top_by: training documents excluded from the comparisons,
# novelty and transience over ±20 years, all of each document's chunks, every comparison chunk).
docs=runs/sample/precocity/documents.tsv
if [ -f "$docs" ]; then
  read -r radius fraction used filter < <(python3 -c '
import json, sys
t = json.load(open(sys.argv[1]))["files"]["documents.tsv"]["parameters"]["top_by"]
print(t["time_radius"], t["fraction_compared"], t["chunks_used"], t["filtered"])' \
    runs/sample/precocity/MANIFEST.json)
  echo
  echo "Most precocious addresses (filter $filter, time radius $radius, chunks used $used, fraction compared $fraction):"
  awk -F'\t' -v filter="$filter" -v radius="$radius" -v used="$used" -v fraction="$fraction" '
    NR == 1 { for (i = 1; i <= NF; i++) col[$i] = i; next }
    $col["filtered"] == filter && $col["time_radius"] == radius && $col["chunks_used"] == used &&
      $col["fraction_compared"] == fraction {
      printf "%s\t%s\t%.4f\t%.4f\t%s\n", $col["precocity"], $col["docid"], $col["novelty"],
        $col["transience"], $col["date"]
    }' "$docs" | sort -g -r -k1,1 |
    # NR <= 10 rather than head: head would stop reading, and sort's SIGPIPE would end the
    # script here under pipefail.
    awk -F'\t' 'BEGIN { printf "  %-10s %-28s %-6s %9s %10s\n", "precocity", "document", "year", "novelty", "transience" }
      NR <= 10 { printf "  %-10.4f %-28s %-6s %9.4f %10.4f\n", $1, $2, $5, $3, $4 }'
fi
if [ -n "$page" ]; then echo; echo "Report: $page"; fi
