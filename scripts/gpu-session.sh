#!/usr/bin/env bash
# Everything one GPU machine session checks, in one call of at most ~9 minutes (the lent H100
# allows few calls), most important first:
#   1. the host CPU (the parity gate's reference runs there) and the CUDA build + GPU tests
#      (scripts/gpu-check.sh without its benchmarks; memcheck comes last, see 5)
#   2. the parity gate's time on synthetic Qwen2.5 Q4_K_M models, several runs, from --json
#   3. the parity falsification tests with CUDA as the candidate
#   4. `lockstep bench --backend cuda` on the same files
#   5. compute-sanitizer memcheck on the CUDA op tests (MEMCHECK_FILTER)
# Logs under $OUT (or build-gpu/gpu-check-logs); $OUT/summary.txt is the digest.
# Environment: GATE_RUNS (7B; default 5, other shapes 2), PRESETS (default "qwen2.5-7b
# qwen2.5-0.5b").
set -uo pipefail
cd "$(dirname "$0")/.."
LOGS="${OUT:-build-gpu/gpu-check-logs}"
mkdir -p "$LOGS"
S="$LOGS/summary.txt"
# The tests read ../shared; on a machine without it, use the carried copy.
if [ ! -d ../shared ] && [ -d .device/shared ]; then ln -sfn "$PWD/.device/shared" ../shared; fi

{
  echo "== host ($(date +%T))"
  lscpu | grep -E "^(Model name|CPU\(s\)|Thread\(s\) per core|Core\(s\) per socket|Socket\(s\)|CPU max MHz)"
  lscpu | grep -o "avx512[a-z_0-9]*" | sort -u | tr '\n' ' '
  echo
} | tee -a "$S"

TEST_TIMEOUT=240 SKIP_BENCH=1 SKIP_SANITIZER=1 bash scripts/gpu-check.sh || echo "gpu-check status $?" | tee -a "$S"
ninja -C build-gpu -j"$(nproc)" parity_model_tests >>"$LOGS/build.log" 2>&1

for preset in ${PRESETS:-qwen2.5-7b qwen2.5-0.5b}; do
  f="/tmp/$preset-q4_k_m.gguf"
  echo "== $preset ($(date +%T))" | tee -a "$S"
  /usr/bin/time -f "make-model $preset q4_k_m: %e s" build-gpu/lockstep make-model --arch qwen2 \
    --preset "$preset" --quant q4_k_m --seed 1 -o "$f" 2>&1 | tail -1 | tee -a "$S"
  # The gate with the default probe (64 positions + 3 steps), as a run opens it; its times are in
  # the --json parity object (ms = whole comparison, reference_ms / candidate_ms per backend).
  runs=${GATE_RUNS:-5}
  [ "$preset" = qwen2.5-7b ] || runs=2
  for i in $(seq 1 "$runs"); do
    timeout 120 build-gpu/lockstep run -m "$f" -p "Hello" -n 4 --temp 0 --backend cuda --json \
      2>>"$LOGS/gate-$preset.log" | python3 scripts/gate_line.py 2>&1 | tee -a "$S"
  done
  # The reference's thread count: default (physical cores) against every logical CPU.
  [ "$preset" = qwen2.5-7b ] && for t in 8 16; do
    timeout 120 build-gpu/lockstep run -m "$f" -p "Hello" -n 4 --temp 0 --backend cuda --json \
      -t "$t" 2>>"$LOGS/gate-$preset.log" | python3 scripts/gate_line.py "-t $t" 2>&1 | tee -a "$S"
  done
  echo "-- bench" | tee -a "$S"
  timeout 150 build-gpu/lockstep bench -m "$f" --backend cuda -p 512 -n 128 -r 3 \
    2>>"$LOGS/bench-cli.log" | tee -a "$S"
  rm -f "$f"
done

echo "== parity falsification with cuda ($(date +%T))" | tee -a "$S"
timeout 150 build-gpu/tests/parity_model_tests --gtest_filter='ParityFalsification.*:ParityTool.*' \
  >"$LOGS/falsification.log" 2>&1
grep -E "^\[  (PASSED|FAILED|  OK) |FAILED TEST" "$LOGS/falsification.log" | tee -a "$S"
LOCKSTEP_FAULT=kv_drift:2 build-gpu/lockstep run -m ../shared/models/stories260K.gguf \
  -p "Once upon a time" -n 16 --temp 0 2>&1 | grep -E "lockstep-parity|backend" | tee -a "$S"

MEMCHECK_FILTER="${MEMCHECK_FILTER:-CudaMatvec.*:CudaAttention.*:CudaOps.*:CudaDequant.*:CudaGetRows.*:-*Real7B*}"
echo "== compute-sanitizer memcheck, $MEMCHECK_FILTER ($(date +%T))" | tee -a "$S"
SAN=$(command -v compute-sanitizer || echo /usr/local/cuda/bin/compute-sanitizer)
timeout "${SANITIZER_TIMEOUT:-120}" "$SAN" --tool memcheck --error-exitcode 9 \
  build-gpu/tests/backend_cuda_gpu_tests \
  --gtest_filter="$MEMCHECK_FILTER" >"$LOGS/memcheck.log" 2>&1
echo "memcheck exit code $?" | tee -a "$S"
grep -E "ERROR SUMMARY|PASSED|FAILED" "$LOGS/memcheck.log" | tail -4 | tee -a "$S"
echo "== done ($(date +%T))" | tee -a "$S"
