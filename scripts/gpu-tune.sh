#!/usr/bin/env bash
# One GPU-machine call that checks and measures the tuning knobs side by side on the same card:
#   1. scripts/gpu-check.sh: CUDA build + every GPU test (no sanitizer, no benchmarks)
#   2. scripts/gate-time.sh: the parity gate's time for each reference-matmul configuration
#   3. CudaThroughput.MatvecBandwidth (float activations vs the int8 path) and OpBreakdown7B
#   4. decode speed for each LOCKSTEP_CUDA_Q8_ROWS (rows per thread block of the int8 matvecs)
#      on the 7B and 0.5B shapes, and the 1.5B shape
# Digest in $OUT/summary.txt (or build-gpu/gpu-tune-logs/summary.txt).
set -uo pipefail
cd "$(dirname "$0")/.."
export OUT="${OUT:-build-gpu/gpu-tune-logs}"
mkdir -p "$OUT"
S="$OUT/summary.txt"
if [ ! -d ../shared ] && [ -d .device/shared ]; then ln -sfn "$PWD/.device/shared" ../shared; fi

TEST_TIMEOUT=200 SKIP_BENCH=1 SKIP_SANITIZER=1 bash scripts/gpu-check.sh >"$OUT/check.log" 2>&1
CONFIGS="${CONFIGS:-default LOCKSTEP_REF_SLAB_KB=1024 LOCKSTEP_REF_DECODE_CHUNK=512}" \
  RUNS="${RUNS:-3}" bash scripts/gate-time.sh >"$OUT/gate.log" 2>&1

echo "== matvec bandwidth and 7B op breakdown ($(date +%T))" | tee -a "$S"
timeout 90 build-gpu/tests/backend_cuda_gpu_tests --gtest_also_run_disabled_tests \
  --gtest_filter='CudaThroughput.*MatvecBandwidth:CudaThroughput.*OpBreakdown7B' >"$OUT/ops.log" 2>&1
grep "\[bench\]" "$OUT/ops.log" | tee -a "$S"

bench() {  # file, label, lockstep bench arguments...
  local f=$1 label=$2
  shift 2
  echo "-- $label" | tee -a "$S"
  timeout 150 build-gpu/lockstep bench -m "$f" --backend cuda "$@" 2>>"$OUT/bench-cli.log" |
    grep -E "pp[0-9]|tg[0-9]" | tee -a "$S"
}
for preset in qwen2.5-7b qwen2.5-0.5b qwen2.5-1.5b; do
  f="/tmp/$preset-q4_k_m.gguf"
  echo "== $preset ($(date +%T))" | tee -a "$S"
  build-gpu/lockstep make-model --arch qwen2 --preset "$preset" --quant q4_k_m --seed 1 -o "$f" \
    >>"$OUT/make-model.log" 2>&1
  if [ "$preset" = qwen2.5-1.5b ]; then
    bench "$f" "default" -p 512 -n 128 -r 3
  else
    for rows in default 1 2 4 8; do
      LOCKSTEP_CUDA_Q8_ROWS=$rows bench "$f" "LOCKSTEP_CUDA_Q8_ROWS=$rows" -p 0 -n 128 -r 3
    done
  fi
  rm -f "$f"
done
echo "== done ($(date +%T))" | tee -a "$S"
