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

echo "==> rsync and sshd for the sync tests" >&2
if ! command -v rsync >/dev/null || [ ! -x /usr/sbin/sshd ] || ! command -v ssh-keygen >/dev/null; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq --no-install-recommends rsync openssh-server openssh-client >/dev/null
fi

# Headless chromium: the report test takes a screenshot of a page and checks it is not blank.
echo "==> chromium for the report's browser test" >&2
if ! command -v chromium >/dev/null; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq --no-install-recommends chromium >/dev/null
fi

# A throwaway single-node Slurm for the slurm crate's tests, with its own state folder and
# ports; only the processes it records are stopped afterwards.
echo "==> local Slurm" >&2
export SLURM_CI_DIR=${SLURM_CI_DIR:-/tmp/strata-test-slurm}
export SLURM_CI_CTLD_PORT=6917 SLURM_CI_SLURMD_PORT=6918 SLURM_CI_DBD_PORT=6919 SLURM_CI_DB_PORT=3407
export SLURM_CI_MIN_JOB_AGE=5
trap 'bash scripts/slurm-down.sh >/dev/null 2>&1 || true' EXIT
bash scripts/slurm-up.sh >/dev/null
. "$SLURM_CI_DIR/env"

echo "==> cargo fmt --check" >&2
cargo fmt --all --check

# One profile (release) for lints, tests and benchmarks: building twice does not fit in CI.
echo "==> cargo clippy" >&2
cargo clippy --workspace --all-targets --release -- -D warnings

# No GPU here: the CUDA build is linted, then built and linked against a generated driver stub
# with NVIDIA's compiler and libraries from PyPI (checks its NEEDED list), not run.
echo "==> --features cuda compiles" >&2
bash scripts/check-cuda.sh
echo "==> --features cuda builds and links" >&2
bash scripts/build-cuda.sh

echo "==> cargo test" >&2
log=$(mktemp)
trap 'rm -f "$log"; bash scripts/slurm-down.sh >/dev/null 2>&1 || true' EXIT
set +e
cargo test --workspace --release 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
# cargo's last line is the doc-tests' count (often 0): print the totals over all test binaries.
awk '/^test result:/ { p += $4; f += $6 } END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
[ "$status" = 0 ] || exit "$status"

# The GPU check's dry mode: the same script as on a GPU machine, on CPU with a tiny
# configuration and the CPU build (no torch here: the sentence-transformers side is skipped).
echo "==> bench/gpu/run.sh --dry" >&2
OUT=$(mktemp -d) bash bench/gpu/run.sh --dry

# What the GPU check needs travels to a GPU machine in parts: pack, stash and unpack them as the
# device calls would, and compare what comes out.
echo "==> bench/gpu/carry.sh selftest" >&2
bash bench/gpu/carry.sh selftest
