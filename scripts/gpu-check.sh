#!/usr/bin/env bash
# GPU check of the CUDA backend, in one go, on a machine with an NVIDIA GPU (sm_90 by default):
#   1. configure + build the CUDA build (build-gpu/) and the GPU test binary
#   2. the GPU tests: the CUDA test binary, or with ALL=1 the whole tree and ctest -L gpu
#   3. compute-sanitizer --tool memcheck on the CUDA test binary (large-shape cases filtered out)
#   4. throughput benchmarks (synthetic Qwen2.5 7B and 0.5B Q4_K_M, op breakdown), and with
#      CLI_BENCH=1 `lockstep bench --backend cuda` on `lockstep make-model` files
# Logs go to $OUT (the device tool's output folder) when set, else build-gpu/gpu-check-logs/.
# Needs ../shared, or a copy of it in .device/shared (which the device tool can carry).
# Environment: CUDA_ARCH (default 90), JOBS (default nproc), ALL=1, SKIP_SANITIZER=1,
# SKIP_BENCH=1, CLI_BENCH=1, EXTRA_CMAKE_ARGS (more configure flags, e.g. a Vulkan build's).
set -uo pipefail
cd "$(dirname "$0")/.."
LOGS="${OUT:-build-gpu/gpu-check-logs}"
mkdir -p "$LOGS"
JOBS="${JOBS:-$(nproc)}"
status=0
step() { echo "== $* ($(date +%T))" | tee -a "$LOGS/summary.txt"; }

if [ ! -d ../shared ] && [ -d .device/shared ]; then
  export LOCKSTEP_SHARED_DIR="$PWD/.device/shared"
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader \
  | tee -a "$LOGS/summary.txt" || true

step "configure + build"
# CMake 3.25 knows no C++20 flag for nvcc; tell it (harmless where CMake already knows it).
cmake -S . -B build-gpu -G Ninja -DCMAKE_BUILD_TYPE=Release -DLOCKSTEP_CUDA=ON \
  -DCMAKE_CUDA_ARCHITECTURES="${CUDA_ARCH:-90}" \
  -DCMAKE_CUDA20_STANDARD_COMPILE_OPTION=-std=c++20 \
  -DCMAKE_CUDA20_EXTENSION_COMPILE_OPTION=-std=c++20 ${EXTRA_CMAKE_ARGS:-} >"$LOGS/build.log" 2>&1 &&
  ninja -C build-gpu -j"$JOBS" backend_cuda_gpu_tests lockstep >>"$LOGS/build.log" 2>&1
if [ $? -ne 0 ]; then
  grep -E "error|FAILED" "$LOGS/build.log" | head -40
  echo "build FAILED (see build.log)" | tee -a "$LOGS/summary.txt"
  exit 1
fi
BIN=build-gpu/tests/backend_cuda_gpu_tests

# ctest needs every test binary built (its discovery files include all of them); with ALL=1 the
# whole tree is built and ctest -L gpu runs, otherwise the CUDA test binary runs directly.
if [ "${ALL:-0}" = 1 ]; then
  step "ctest -L gpu"
  ninja -C build-gpu -j"$JOBS" >>"$LOGS/build.log" 2>&1 || status=1
  timeout 600 ctest --test-dir build-gpu -L gpu -j4 --output-on-failure --timeout 300 \
    >"$LOGS/tests.log" 2>&1 || status=1
  grep -E "tests passed|tests failed|\*\*\*Failed|Timeout|Not Run" "$LOGS/tests.log" |
    tee -a "$LOGS/summary.txt"
else
  step "GPU tests ($BIN)"
  timeout "${TEST_TIMEOUT:-600}" "$BIN" >"$LOGS/tests.log" 2>&1 || status=1
  grep -E "^\[  (PASSED|FAILED|SKIPPED) |tests ran|FAILED TEST" "$LOGS/tests.log" |
    tee -a "$LOGS/summary.txt"
  # Failure details (with the SCOPED_TRACE seeds) in the digest too: the device tool returns at
  # most 8 files of $OUT, and tests.log may not be among them.
  grep -E -A8 "Failure$" "$LOGS/tests.log" | head -60 | tee -a "$LOGS/summary.txt"
fi

if [ "${SKIP_SANITIZER:-0}" != 1 ]; then
  step "compute-sanitizer memcheck"
  SAN=$(command -v compute-sanitizer || echo /usr/local/cuda/bin/compute-sanitizer)
  timeout "${SANITIZER_TIMEOUT:-150}" "$SAN" --tool memcheck --leak-check full --error-exitcode 9 "$BIN" \
    --gtest_filter='-*Real7B*:*Throughput*:*QuantizedModels*:*Synthetic*' >"$LOGS/memcheck.log" 2>&1
  rc=$?
  [ $rc -ne 0 ] && status=1
  grep -E "ERROR SUMMARY|LEAK SUMMARY|PASSED|FAILED" "$LOGS/memcheck.log" | tail -8 |
    tee -a "$LOGS/summary.txt"
  echo "memcheck exit code $rc" | tee -a "$LOGS/summary.txt"
fi

if [ "${SKIP_BENCH:-0}" != 1 ]; then
  step "benchmarks"
  timeout 240 "$BIN" --gtest_also_run_disabled_tests --gtest_filter='CudaThroughput.*' >"$LOGS/bench.log" 2>&1 ||
    status=1
  grep "\[bench\]" "$LOGS/bench.log" | tee -a "$LOGS/summary.txt"
  # `lockstep bench --backend cuda` serves from the CPU reference until the CLI's run path opens
  # backends through the parity gate; CLI_BENCH=1 runs it anyway.
  if [ "${CLI_BENCH:-0}" = 1 ] && build-gpu/lockstep make-model --help >/dev/null 2>&1; then
    for preset in qwen2.5-7b qwen2.5-0.5b; do
      f="/tmp/lockstep-$preset-q4_k_m.gguf"
      build-gpu/lockstep make-model --preset "$preset" --quant q4_k_m -o "$f" \
        >>"$LOGS/cli-bench.log" 2>&1 &&
        timeout 300 build-gpu/lockstep bench -m "$f" --backend cuda -p 512 -n 128 -r 3 \
          >>"$LOGS/cli-bench.log" 2>&1
      rm -f "$f"
    done
    tail -20 "$LOGS/cli-bench.log" | tee -a "$LOGS/summary.txt"
  else
    echo "CLI bench skipped (CLI_BENCH=1 runs it)" | tee -a "$LOGS/summary.txt"
  fi
fi
step "done, status $status"
exit $status
