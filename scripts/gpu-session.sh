#!/usr/bin/env bash
# Everything a GPU machine session checks, in one call (the lent H100 allows few calls):
#   scripts/gpu-check.sh (CUDA build, GPU op/e2e tests, compute-sanitizer), then the parity
#   gate's falsification tests with the CUDA backend as the candidate, then make-model timing,
#   the gate's time on the host CPU, and `lockstep bench --backend cuda` on synthetic Qwen2.5
#   Q4_K_M models. Logs under $OUT (or build-gpu/gpu-check-logs).
set -uo pipefail
cd "$(dirname "$0")/.."
LOGS="${OUT:-build-gpu/gpu-check-logs}"
mkdir -p "$LOGS"
# The tests read ../shared; on a machine without it, use the carried copy.
if [ ! -d ../shared ] && [ -d .device/shared ]; then ln -sfn "$PWD/.device/shared" ../shared; fi
SKIP_BENCH=1 SANITIZER_TIMEOUT="${SANITIZER_TIMEOUT:-120}" bash scripts/gpu-check.sh
echo "== parity falsification with cuda ($(date +%T))" | tee -a "$LOGS/summary.txt"
ninja -C build-gpu -j"$(nproc)" parity_model_tests parity_unit_tests >>"$LOGS/build.log" 2>&1
timeout 240 build-gpu/tests/parity_model_tests --gtest_filter='ParityFalsification.*:ParityTool.*' \
  >"$LOGS/falsification.log" 2>&1
grep -E "^\[  (PASSED|FAILED|  OK) |FAILED TEST" "$LOGS/falsification.log" | tee -a "$LOGS/summary.txt"
LOCKSTEP_FAULT=kv_drift:2 build-gpu/lockstep run -m ../shared/models/stories260K.gguf \
  -p "Once upon a time" -n 16 --temp 0 2>&1 | grep -E "lockstep-parity|backend" | tee -a "$LOGS/summary.txt"
for preset in qwen2.5-0.5b qwen2.5-1.5b qwen2.5-7b; do
  f="/tmp/$preset-q4_k_m.gguf"
  echo "== $preset ($(date +%T))" | tee -a "$LOGS/summary.txt"
  /usr/bin/time -f "make-model $preset q4_k_m: %e s" build-gpu/lockstep make-model --arch qwen2 \
    --preset "$preset" --quant q4_k_m --seed 1 -o "$f" 2>&1 | tail -1 | tee -a "$LOGS/summary.txt"
  # The gate's time with the default probe (64 positions + 3 steps): in the stderr header.
  timeout 120 build-gpu/lockstep run -m "$f" -p "Hello" -n 8 --temp 0 --backend cuda 2>&1 >/dev/null |
    grep -E "backend|parity" | tee -a "$LOGS/summary.txt"
  timeout 200 build-gpu/lockstep bench -m "$f" --backend cuda -p 512 -n 128 -r 3 2>>"$LOGS/bench-cli.log" |
    tee -a "$LOGS/summary.txt"
  rm -f "$f"
done
echo "== done ($(date +%T))" | tee -a "$LOGS/summary.txt"
