#!/usr/bin/env bash
# Runs every check the project has, from a fresh clone: installs what the tests need (Python
# readers for the Parquet compatibility test, the base model), then format, lints and tests.
# CI runs exactly this (see .ci/run).
set -euo pipefail
cd "$(dirname "$0")/.."

echo "==> Python packages for the Parquet compatibility tests" >&2
python3 -m pip install --quiet --disable-pip-version-check -r scripts/requirements-test.txt

echo "==> base model" >&2
scripts/fetch-model.sh

echo "==> cargo fmt --check" >&2
cargo fmt --all --check

# One profile (release) for lints, tests and benchmarks: building twice does not fit in CI.
echo "==> cargo clippy" >&2
cargo clippy --workspace --all-targets --release -- -D warnings

echo "==> cargo test" >&2
log=$(mktemp)
trap 'rm -f "$log"' EXIT
set +e
cargo test --workspace --release 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
# cargo's last line is the doc-tests' count (often 0): print the totals over all test binaries.
awk '/^test result:/ { p += $4; f += $6 } END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
exit "$status"
