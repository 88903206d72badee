#!/usr/bin/env bash
# The CUDA backend on the architectures beyond llama/qwen2 (issue 12), on the GPU machine, in one
# call of at most ~8 minutes (a 16-core H100 machine; the build is 3-4 of them):
#   1. build lockstep and the CUDA test binary in build-gpu/ (configured as gpu-check.sh does)
#   2. the new GPU tests (CudaArchOps.*, CudaArch.*), with the rest of backend_cuda_gpu_tests
#      beside them in the background (cut, and said so, when the budget runs out)
#   3. `lockstep parity --backend cuda` on each tiny arch model of ../shared/models/arch
#   4. make-model presets of the new architectures in Q4_K_M: parity --backend cuda on each
#      (qwen3-0.6b, gemma-3-1b, then phi-3-mini and llama-3.1-8b while time is left), and
#      `lockstep bench --backend cuda -p 512 -n 128` on qwen3-0.6b and gemma-3-1b
# Logs under $OUT (else build-gpu/gpu-arch-logs); $OUT/summary.txt is the digest. Steps after the
# build are skipped, and say so, once the time budget (BUDGET_S, default 440 s) is spent.
set -uo pipefail
cd "$(dirname "$0")/.."
LOGS="${OUT:-build-gpu/gpu-arch-logs}"
mkdir -p "$LOGS"
S="$LOGS/summary.txt"
START=$(date +%s)
BUDGET_S="${BUDGET_S:-440}"
JOBS="${JOBS:-$(nproc)}"
if [ ! -d ../shared ] && [ -d .device/shared ]; then ln -sfn "$PWD/.device/shared" ../shared; fi
if [ ! -d ../shared ] && [ -d .device/shared ]; then export LOCKSTEP_SHARED_DIR="$PWD/.device/shared"; fi
status=0
step() { echo "== $* ($(date +%T), +$(($(date +%s) - START)) s)" | tee -a "$S"; }
# True while at least $1 seconds of the budget are left.
time_left() { [ $(($(date +%s) - START + $1)) -le "$BUDGET_S" ]; }
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee -a "$S" || true

step "configure + build"
cmake -S . -B build-gpu -G Ninja -DCMAKE_BUILD_TYPE=Release -DLOCKSTEP_CUDA=ON \
  -DCMAKE_CUDA_ARCHITECTURES="${CUDA_ARCH:-90}" \
  -DCMAKE_CUDA20_STANDARD_COMPILE_OPTION=-std=c++20 \
  -DCMAKE_CUDA20_EXTENSION_COMPILE_OPTION=-std=c++20 ${EXTRA_CMAKE_ARGS:-} >"$LOGS/build.log" 2>&1 &&
  ninja -C build-gpu -j"$JOBS" backend_cuda_gpu_tests lockstep >>"$LOGS/build.log" 2>&1
if [ $? -ne 0 ]; then
  grep -E "error|FAILED" "$LOGS/build.log" | head -40 | tee -a "$S"
  echo "build FAILED (see build.log)" | tee -a "$S"
  exit 1
fi
BIN=build-gpu/tests/backend_cuda_gpu_tests
# As ctest runs them: no pass remembered by an earlier test stands in for a gate run.
export LOCKSTEP_VERDICT_CACHE=off
L=build-gpu/lockstep

# The existing CUDA tests in the background from here, so that they fit the budget; ~120 s of it
# is kept for the presets.
OTHER_T=$((BUDGET_S - ($(date +%s) - START) - 120))
[ "$OTHER_T" -ge 90 ] || OTHER_T=90
step "the other CUDA GPU tests start (background, timeout ${OTHER_T} s)"
timeout "$OTHER_T" "$BIN" --gtest_filter='-CudaArchOps.*:CudaArch.*' >"$LOGS/cuda-tests.log" 2>&1 &
OTHER_PID=$!

step "new GPU tests (CudaArchOps.*:CudaArch.*)"
timeout 150 "$BIN" --gtest_filter='CudaArchOps.*:CudaArch.*' >"$LOGS/arch-tests.log" 2>&1 ||
  status=1
grep -E "^\[  (PASSED|FAILED|SKIPPED) |^\[==========\]|worst cosine|gate \]" "$LOGS/arch-tests.log" \
  | tail -60 | tee -a "$S"
grep -B2 -A8 "Failure" "$LOGS/arch-tests.log" | head -60 | tee -a "$S"

step "parity --backend cuda on the tiny arch models"
for m in tiny-qwen3 tiny-gemma2 tiny-gemma3 tiny-llama3-ropefreqs; do
  f=../shared/models/arch/$m.gguf
  [ -f "$f" ] || f="${LOCKSTEP_SHARED_DIR:-../shared}/models/arch/$m.gguf"
  timeout 60 "$L" parity -m "$f" --backend cuda >"$LOGS/parity-$m.log" 2>&1
  rc=$?
  [ $rc -eq 0 ] || status=1
  echo "$m: exit $rc; $(grep -m1 -E 'lockstep-parity|PASS|FAIL|pass|fail' "$LOGS/parity-$m.log")" |
    tee -a "$S"
done

# The rest of the CUDA tests (the llama/qwen2 paths must be unchanged) have run beside the steps
# above (correctness only; nothing is timed before the benchmarks below, which wait for them).
wait "$OTHER_PID"
rc=$?
[ $rc -eq 0 ] || status=1
step "the other CUDA GPU tests: exit $rc"
[ $rc -eq 124 ] && echo "cut by the time budget (${OTHER_T} s; see cuda-tests.log)" | tee -a "$S"
grep -E "^\[  (PASSED|FAILED|SKIPPED) |^\[==========\]" "$LOGS/cuda-tests.log" | tail -8 | tee -a "$S"
grep -E "^\[  FAILED|^\[ RUN" "$LOGS/cuda-tests.log" | tail -3 | tee -a "$S"

# Synthetic files of the real shapes; bigger ones only while the budget allows (make-model and
# the CPU reference's probe take longest on them).
mkdir -p build-gpu/models
preset_model() {  # preset arch -> path (made once per machine)
  local f="build-gpu/models/$1-q4_k_m.gguf"
  [ -f "$f" ] || "$L" make-model --preset "$1" --arch "$2" --quant q4_k_m --seed 1 -o "$f" --quiet \
    >>"$LOGS/make-model.log" 2>&1 || { rm -f "$f"; return 1; }
  echo "$f"
}
for spec in qwen3-0.6b:qwen3:60 gemma-3-1b:gemma3:60 phi-3-mini:phi3:150 llama-3.1-8b:llama:200; do
  IFS=: read -r preset arch need <<<"$spec"
  if ! time_left "$need"; then
    echo "skipped: $preset (time; ${need} s needed)" | tee -a "$S"
    continue
  fi
  step "$preset q4_k_m"
  f=$(preset_model "$preset" "$arch") || { echo "$preset: make-model FAILED" | tee -a "$S"; status=1; continue; }
  timeout "$need" "$L" parity -m "$f" --backend cuda >"$LOGS/parity-$preset.log" 2>&1
  rc=$?
  [ $rc -eq 0 ] || status=1
  echo "$preset parity: exit $rc; $(grep -m1 -E 'lockstep-parity|PASS|FAIL|pass|fail' "$LOGS/parity-$preset.log")" |
    tee -a "$S"
  case "$preset" in
    qwen3-0.6b | gemma-3-1b)
      if time_left 40; then
        timeout 60 "$L" bench -m "$f" --backend cuda -p 512 -n 128 >"$LOGS/bench-$preset.log" 2>&1 ||
          status=1
        grep -v "^\[lockstep\]" "$LOGS/bench-$preset.log" | tail -6 | tee -a "$S"
      else
        echo "skipped: bench $preset (time)" | tee -a "$S"
      fi
      ;;
  esac
done

step "done, status $status"
exit $status
