#!/usr/bin/env bash
# The parity gate's time on this host's CPU with the default probe (64 positions + 3 steps), for
# each reference-matmul configuration in CONFIGS (environment assignments joined by commas, e.g.
# LOCKSTEP_REF_CHUNK=1024,LOCKSTEP_REF_DECODE_CHUNK=512; "default" for none), interleaved so that all see
# the same machine state; then the reference's own unit tests on this CPU. Needs a CUDA device
# (the candidate) and builds build-gpu/ like scripts/gpu-check.sh.
# Logs and summary.txt under $OUT (or build-gpu/gate-time-logs).
# Environment: PRESETS (default qwen2.5-7b), RUNS (default 3 per configuration), CONFIGS.
set -uo pipefail
cd "$(dirname "$0")/.."
LOGS="${OUT:-build-gpu/gate-time-logs}"
mkdir -p "$LOGS"
S="$LOGS/summary.txt"
lscpu | grep -E "^(Model name|CPU\(s\))" | tee -a "$S"
nvidia-smi --query-gpu=name --format=csv,noheader | tee -a "$S"
cmake -S . -B build-gpu -G Ninja -DCMAKE_BUILD_TYPE=Release -DLOCKSTEP_CUDA=ON \
  -DCMAKE_CUDA_ARCHITECTURES="${CUDA_ARCH:-90}" \
  -DCMAKE_CUDA20_STANDARD_COMPILE_OPTION=-std=c++20 \
  -DCMAKE_CUDA20_EXTENSION_COMPILE_OPTION=-std=c++20 >"$LOGS/build.log" 2>&1 &&
  ninja -C build-gpu -j"$(nproc)" lockstep backend_unit_tests >>"$LOGS/build.log" 2>&1 ||
  { echo "build FAILED" | tee -a "$S"; tail -30 "$LOGS/build.log"; exit 1; }

gate() {  # file, label, extra env...
  local f=$1 label=$2
  shift 2
  env "$@" timeout 120 build-gpu/lockstep run -m "$f" -p "Hello" -n 4 --temp 0 --backend cuda \
    --json 2>>"$LOGS/gate.log" | python3 scripts/gate_line.py "$(printf '%-40s' "$label")" 2>&1 |
    tee -a "$S"
}

for preset in ${PRESETS:-qwen2.5-7b}; do
  f="/tmp/$preset-q4_k_m.gguf"
  echo "== $preset ($(date +%T))" | tee -a "$S"
  build-gpu/lockstep make-model --arch qwen2 --preset "$preset" --quant q4_k_m --seed 1 -o "$f" \
    >>"$LOGS/gate.log" 2>&1
  for i in $(seq 1 "${RUNS:-3}"); do
    for c in ${CONFIGS:-default LOCKSTEP_REF_DECODE_CHUNK=512}; do
      if [ "$c" = default ]; then gate "$f" "$c" LOCKSTEP_UNUSED=; else gate "$f" "$c" ${c//,/ }; fi
    done
  done
  rm -f "$f"
done
echo "== reference unit tests on this CPU ($(date +%T))" | tee -a "$S"
timeout 120 build-gpu/tests/backend_unit_tests --gtest_filter='MatmulRef.*:OpsRef.*:ReferenceForward.*' \
  >"$LOGS/unit.log" 2>&1
grep -E "^\[  (PASSED|FAILED) |FAILED TEST" "$LOGS/unit.log" | tee -a "$S"
