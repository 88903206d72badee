#!/usr/bin/env bash
# The fast CPU path's speed on a many-core host (issue 13, target 2: the GPU machine's 16-core
# AVX-512 host, llama.cpp's numbers in the issue). Builds a CPU-only Release into build-cpu/,
# makes the synthetic qwen2.5-0.5b and qwen2.5-7b Q4_K_M files (--seed 1) in /tmp, and benches
# both with `--backend cpu --parity off -p 128,512 -n 128`; THREADS (default 16). The 7B runs
# with fewer repetitions (REPS_7B, default 2) to stay within ~8 minutes.
# Logs under $OUT (default build-cpu/bench-logs); $OUT/summary.txt is the digest. LOCKSTEP_BIN: a
# lockstep binary already built (a CUDA build runs --backend cpu the same), skipping the build.
set -uo pipefail
cd "$(dirname "$0")/.."
LOGS="${OUT:-build-cpu/bench-logs}"
mkdir -p "$LOGS"
S="$LOGS/summary.txt"
THREADS="${THREADS:-16}"
REPS_7B="${REPS_7B:-2}"
{
  echo "== $(date -u +%FT%TZ) $(git rev-parse --short HEAD 2>/dev/null) $(nproc) cpus"
  grep -m1 "model name" /proc/cpuinfo
  grep -o -w 'avx512f\|avx512_vnni\|avx512vnni\|avx2' /proc/cpuinfo | sort -u | tr '\n' ' '
  echo
} | tee -a "$S"

L="${LOCKSTEP_BIN:-build-cpu/lockstep}"
if [ -z "${LOCKSTEP_BIN:-}" ]; then
  start=$SECONDS
  cmake -S . -B build-cpu -G Ninja -DCMAKE_BUILD_TYPE=Release -DLOCKSTEP_CUDA=OFF \
    >"$LOGS/cmake.log" 2>&1 &&
    ninja -C build-cpu -j"$(nproc)" lockstep >"$LOGS/build.log" 2>&1 ||
    { echo "build failed (see build.log)" | tee -a "$S"; tail -20 "$LOGS/build.log"; exit 1; }
  echo "built in $((SECONDS - start)) s" | tee -a "$S"
fi

for preset in qwen2.5-0.5b qwen2.5-7b; do
  f="/tmp/$preset-q4_k_m.gguf"
  if [ ! -f "$f" ]; then
    start=$SECONDS
    $L make-model --arch qwen2 --preset "$preset" --quant q4_k_m --seed 1 -o "$f" \
      >>"$LOGS/make-model.log" 2>&1 || { echo "make-model $preset failed" | tee -a "$S"; continue; }
    echo "made $f in $((SECONDS - start)) s" | tee -a "$S"
  fi
  reps=3
  [ "$preset" = qwen2.5-7b ] && reps="$REPS_7B"
  echo "-- $preset q4_k_m: bench --backend cpu --parity off -p 128,512 -n 128 -t $THREADS -r $reps" |
    tee -a "$S"
  timeout 300 $L bench -m "$f" --backend cpu --parity off -p 128,512 -n 128 -t "$THREADS" \
    -r "$reps" 2>"$LOGS/bench-$preset.err" | tee -a "$S"
  echo "(status $?)" | tee -a "$S"
done
