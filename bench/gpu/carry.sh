#!/usr/bin/env bash
# Carries what the GPU check needs and git does not hold to a GPU machine in parts that each fit
# one device call (64 MiB per call for everything that travels, the tracked tree included).
# The payload: the base model (models/all-MiniLM-L6-v2, 87 MiB of f32 weights that compress to
# ~83 MB: it cannot travel whole in one call), the stripped CUDA binaries (scripts/build-cuda.sh
# → target/cuda/dist/) and a stripped select-pairs (target/release/).
#
#   bench/gpu/carry.sh pack     here: writes target/gpu-carry/payload.tar.xz.<i> (each small
#                               enough to travel beside the tracked tree) and SHA256, and prints
#                               the device calls to make, in order
#   bench/gpu/carry.sh stash    on the GPU machine, one call per part but the last: keeps the
#                               part that came with this call in /tmp/strata-carry (the machine
#                               keeps /tmp between calls while it stays warm, 30 s)
#   bench/gpu/carry.sh unpack   on the GPU machine, in the last call: joins the parts, checks
#                               their sha256 and restores the payload into this checkout
#   bench/gpu/carry.sh selftest here: packs, then stashes and unpacks into a scratch clone as
#                               the device calls would, and compares every restored file
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
dir=target/gpu-carry
stash=${STRATA_CARRY_STASH:-/tmp/strata-carry}
model=models/all-MiniLM-L6-v2
limit=$((64 * 1024 * 1024))

# Whatever travels with every call: tracked files and untracked ones git does not ignore.
tree_bytes() { git ls-files -coz --exclude-standard | xargs -0 stat -c %s 2>/dev/null | awk '{ s += $1 } END { print s + 0 }'; }

payload_files() {
  echo "$model"
  echo target/cuda/dist/apply-model
  echo target/cuda/dist/tune-embeddings
  echo target/release/select-pairs
}

pack() {
  for f in $(payload_files); do
    [ -e "$f" ] || { echo "carry: $f is missing (scripts/fetch-model.sh, scripts/build-cuda.sh, cargo build --release)" >&2; exit 1; }
  done
  rm -rf "$dir" && mkdir -p "$dir/stage/target/release"
  # select-pairs as built carries its line tables (~90 MB); the check needs only the code.
  strip -o "$dir/stage/target/release/select-pairs" target/release/select-pairs
  echo "carry: compressing the payload (xz)" >&2
  tar -cf - "$model" target/cuda/dist/apply-model target/cuda/dist/tune-embeddings \
    -C "$dir/stage" target/release/select-pairs | xz -T0 -6 > "$dir/payload.tar.xz"
  rm -rf "$dir/stage"
  # 2 MiB spare for the SHA256 file, the tree's growth and the transfer's own bookkeeping.
  local tree part
  tree=$(tree_bytes)
  part=$((limit - tree - 2 * 1024 * 1024))
  [ "$part" -gt $((8 * 1024 * 1024)) ] || { echo "carry: the tracked tree leaves no room under 64 MiB" >&2; exit 1; }
  split -b "$part" -d -a 1 "$dir/payload.tar.xz" "$dir/payload.tar.xz."
  local n
  n=$(ls "$dir"/payload.tar.xz.* | wc -l)
  { echo "parts $n"; (cd "$dir" && sha256sum payload.tar.xz); } > "$dir/SHA256"
  rm "$dir/payload.tar.xz"
  echo "carry: $(stat -c %s "$dir"/payload.tar.xz.* | awk '{ s += $1 } END { print s }') bytes in $n parts of at most $part (tree: $tree bytes); device calls, in order, each right after the last (the machine stays warm 30 s):" >&2
  local i
  for ((i = 0; i < n - 1; i++)); do
    echo "  run carry=[\"$dir/payload.tar.xz.$i\"] command=\"bash bench/gpu/carry.sh stash\""
  done
  echo "  run carry=[\"$dir/payload.tar.xz.$((n - 1))\", \"$dir/SHA256\"] command=\"bash bench/gpu/carry.sh unpack && bash bench/gpu/run.sh\""
}

stash_parts() {
  mkdir -p "$stash"
  local found=0 p
  for p in "$dir"/payload.tar.xz.*; do
    [ -e "$p" ] || continue
    cp "$p" "$stash/" && found=1
    echo "carry: stashed $(basename "$p") ($(stat -c %s "$p") bytes) in $stash" >&2
  done
  [ "$found" = 1 ] || { echo "carry: no part came with this call (name one in carry)" >&2; exit 1; }
}

unpack() {
  stash_parts
  [ -f "$dir/SHA256" ] || { echo "carry: $dir/SHA256 did not come with this call" >&2; exit 1; }
  local n have
  n=$(awk '/^parts/ { print $2 }' "$dir/SHA256")
  have=$(ls "$stash"/payload.tar.xz.* | wc -l)
  [ "$have" = "$n" ] || { echo "carry: $have of $n parts in $stash (a fresh machine lost the earlier ones: carry them again)" >&2; exit 1; }
  local i
  for ((i = 0; i < n; i++)); do cat "$stash/payload.tar.xz.$i"; done > "$stash/payload.tar.xz"
  (cd "$stash" && tail -n +2 "$root/$dir/SHA256" | sha256sum -c --quiet -) ||
    { echo "carry: the joined payload does not match its sha256" >&2; exit 1; }
  xz -dc "$stash/payload.tar.xz" | tar -xf -
  rm -f "$stash/payload.tar.xz"
  echo "carry: restored $(payload_files | tr '\n' ' ')" >&2
}

selftest() {
  pack >/dev/null
  local scratch
  scratch=$(mktemp -d)
  trap 'rm -rf "$scratch"' RETURN
  git clone -q "$root" "$scratch/repo"
  mkdir -p "$scratch/repo/$dir" "$scratch/repo/bench/gpu"
  cp bench/gpu/carry.sh "$scratch/repo/bench/gpu/carry.sh"
  local n i
  n=$(awk '/^parts/ { print $2 }' "$dir/SHA256")
  # One call per part, each with only its own part in the tree, as the device calls carry them.
  for ((i = 0; i < n; i++)); do
    rm -f "$scratch/repo/$dir"/*
    cp "$dir/payload.tar.xz.$i" "$scratch/repo/$dir/"
    if [ "$i" -lt $((n - 1)) ]; then
      (cd "$scratch/repo" && STRATA_CARRY_STASH=$scratch/stash bash bench/gpu/carry.sh stash)
    else
      cp "$dir/SHA256" "$scratch/repo/$dir/"
      (cd "$scratch/repo" && STRATA_CARRY_STASH=$scratch/stash bash bench/gpu/carry.sh unpack)
    fi
  done
  (cd "$scratch/repo" && find "$model" -type f | sort | xargs sha256sum) > "$scratch/got"
  find "$model" -type f | sort | xargs sha256sum > "$scratch/want"
  for b in apply-model tune-embeddings; do
    cmp "target/cuda/dist/$b" "$scratch/repo/target/cuda/dist/$b"
  done
  cmp "$scratch/want" "$scratch/got"
  "$scratch/repo/target/release/select-pairs" --version >/dev/null
  echo "carry: selftest ok ($n parts; model, CUDA binaries and select-pairs restored byte for byte)" >&2
}

case "${1:-}" in
  pack) pack ;;
  stash) stash_parts ;;
  unpack) unpack ;;
  selftest) selftest ;;
  *) echo "usage: bench/gpu/carry.sh pack|stash|unpack|selftest" >&2; exit 2 ;;
esac
