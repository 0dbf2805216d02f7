#!/usr/bin/env bash
# apply-model vs ONNX Runtime (fp32, 2 threads) on the same texts: see bench/apply_vs_ort.py.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install --quiet --disable-pip-version-check -r scripts/requirements-test.txt -r bench/requirements.txt
scripts/fetch-model.sh
cargo build --release -p apply-model
python3 bench/apply_vs_ort.py
