#!/usr/bin/env bash
# After scripts/gpu-round.sh in the same device call (build-gpu/ built): the flash prefill kernel
# beside the FP32 one (LOCKSTEP_CUDA_FLASH_PREFILL=0) on long prompts, issue 14's table
# (bench -p 512,4096,16384 and -d), then racecheck of the flash test. Appends to $OUT/summary.txt.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
LOGS="${OUT:-build-gpu/gpu-round-logs}"
S="$LOGS/summary.txt"
L=build-gpu/lockstep
export LOCKSTEP_VERDICT_CACHE=off
for preset in ${PRESETS:-qwen2.5-7b qwen2.5-0.5b}; do
  f=/tmp/$preset-q4_k_m.gguf
  [ -f "$f" ] || "$L" make-model --arch qwen2 --preset "$preset" --quant q4_k_m --seed 1 -o "$f" --quiet
  for flash in 1 0; do
    echo "-- $preset flash_prefill=$flash: bench -p 512,4096,16384 -n 128 -d 0,4096" | tee -a "$S"
    LOCKSTEP_CUDA_FLASH_PREFILL=$flash timeout 150 "$L" bench -m "$f" --backend cuda --parity off \
      -c 20608 -p 512,4096,16384 -n 128 -d 0,4096 -r 1 2>>"$LOGS/bench-flash.log" | tee -a "$S"
  done
done
if [ "${RACECHECK:-1}" = 1 ]; then
  SAN=$(command -v compute-sanitizer || echo /usr/local/cuda/bin/compute-sanitizer)
  echo "-- racecheck CudaAttention.FlashPrefillAgainstFloat64" | tee -a "$S"
  timeout "${RACE_S:-120}" "$SAN" --tool racecheck --error-exitcode 9 \
    build-gpu/tests/backend_cuda_gpu_tests --gtest_filter='CudaAttention.FlashPrefillAgainstFloat64' \
    >"$LOGS/racecheck.log" 2>&1
  echo "racecheck exit $?" | tee -a "$S"
  grep -E "RACECHECK SUMMARY|ERROR SUMMARY|hazard|^\[  (PASSED|FAILED) " "$LOGS/racecheck.log" | head -8 | tee -a "$S"
fi
