#!/usr/bin/env bash
# Finds where single-sequence CUDA decode slowed down: builds `lockstep` at several commits and
# runs the same `bench` on each, in one device call. bench/NOTES.md ("The GPU machine, 2026-12-06
# evening"): 7B Q4_K_M tg128 was 343-348 tok/s on an H100 at dcc38c5 (2026-11-26) and is 229 now;
# the 0.5B did not move.
#
# Here (the device gets the working tree, not .git): export the commits into .device/commits,
#   bash scripts/gpu-bisect-decode.sh --export dcc38c5 44381c4 e54a59c 3ce3028 HEAD
# then on the device (carry .device):
#   run(command="bash scripts/gpu-bisect-decode.sh", carry=[".device"])
# Each commit's tree builds into build-bisect/<commit> (lockstep only, CUDA on, sm_90: about a
# minute on 16 cores), the 7B file is made once by the working tree's build, and every build runs
# `bench --backend cuda --parity off -p 64 -n 128 -r 3` on it (PRESETS: qwen2.5-7b by default).
# $OUT/summary.txt gets one tg128 line per commit and preset.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
DIR=.device/commits

if [ "${1:-}" = --export ]; then
  shift
  rm -rf "$DIR"
  mkdir -p "$DIR"
  for c in "$@"; do
    sha=$(git rev-parse --short "$c") || exit 1
    mkdir -p "$DIR/$sha"
    git archive "$sha" | tar -x -C "$DIR/$sha"
    git log -1 --format="%h %ad %s" --date=short "$sha" | cut -c1-100 >"$DIR/$sha/COMMIT"
    echo "$DIR/$sha: $(du -sh "$DIR/$sha" | cut -f1)"
  done
  exit 0
fi

OUTDIR="${OUT:-build-bisect/logs}"
mkdir -p "$OUTDIR"
S="$OUTDIR/summary.txt"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee -a "$S"
configure() {  # source dir, build dir
  cmake -S "$1" -B "$2" -G Ninja -DCMAKE_BUILD_TYPE=Release -DLOCKSTEP_CUDA=ON \
    -DLOCKSTEP_VULKAN=OFF -DCMAKE_CUDA_ARCHITECTURES=90 \
    -DCMAKE_CUDA20_STANDARD_COMPILE_OPTION=-std=c++20 \
    -DCMAKE_CUDA20_EXTENSION_COMPILE_OPTION=-std=c++20 >"$2.log" 2>&1 &&
    ninja -C "$2" -j"$(nproc)" lockstep >>"$2.log" 2>&1
}
mkdir -p build-bisect
configure . build-bisect/current || { tail -20 build-bisect/current.log | tee -a "$S"; exit 1; }
for preset in ${PRESETS:-qwen2.5-7b}; do
  f=/tmp/$preset-q4_k_m.gguf
  [ -f "$f" ] || build-bisect/current/lockstep make-model --arch qwen2 --preset "$preset" \
    --quant q4_k_m --seed 1 -o "$f" --quiet
done
for src in "$DIR"/*/ .; do
  name=$(basename "$src")
  [ "$src" = . ] && name=current
  if [ "$name" != current ]; then
    configure "$src" "build-bisect/$name" || { echo "$name: build failed" | tee -a "$S"; continue; }
  fi
  for preset in ${PRESETS:-qwen2.5-7b}; do
    echo "-- $name $preset: $(cat "$src/COMMIT" 2>/dev/null)" | tee -a "$S"
    timeout 120 "build-bisect/$name/lockstep" bench -m "/tmp/$preset-q4_k_m.gguf" \
      --backend cuda --parity off -p 64 -n 128 -r 3 2>>"$OUTDIR/bench.log" | grep tg128 |
      tee -a "$S"
  done
done
