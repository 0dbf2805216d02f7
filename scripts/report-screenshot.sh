#!/usr/bin/env bash
# Screenshot of a report page in Debian's headless chromium (the PNG in the README:
# `scripts/report-screenshot.sh runs/sample/report docs/report.png`). Installs chromium when
# it is missing (root). The test `page_renders_in_headless_chromium` (cargo test -p report)
# checks that a page renders, not blank; this script only takes the picture.
set -euo pipefail
report=${1:?usage: report-screenshot.sh REPORT_DIR OUT.png [WIDTHxHEIGHT]}
out=${2:?usage: report-screenshot.sh REPORT_DIR OUT.png [WIDTHxHEIGHT]}
size=${3:-1100x1500}
if ! command -v chromium >/dev/null; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq --no-install-recommends chromium >/dev/null
fi
profile=$(mktemp -d)
trap 'rm -rf "$profile"' EXIT
# Half scale: the page's top (header, corpus figures) in a picture small enough for a README.
chromium --headless --no-sandbox --disable-gpu --hide-scrollbars --no-first-run \
  --user-data-dir="$profile" --force-device-scale-factor=0.6 \
  --window-size="${size/x/,}" --screenshot="$(realpath -m "$out")" \
  "file://$(realpath "$report")/index.html" >/dev/null 2>&1
echo "$out"
