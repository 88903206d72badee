#!/usr/bin/env bash
# Continuous batching on the GPU machine (issue: lockstep serve on CUDA), in calls of at most ~9
# minutes each. PART=1: build, every GPU test, memcheck of the batched kernels, the parity
# falsification with CUDA, then the benchmarks of PRESETS (default qwen2.5-0.5b). PART=2 (same warm
# machine, build-gpu kept): only the benchmarks of PRESETS (e.g. qwen2.5-7b).
# Benchmarks per preset (make-model ... --quant q4_k_m --seed 1):
#   - bench -p 512 -n 128 (single sequence, the tg128 the batched B=1 is compared with)
#   - bench --batch 1,8,32,64,128 -p 256 -n 128 (llama-batched-bench shape), default settings
#     and --batch-invariant
#   - lockstep serve --parallel 64 + bench/serve_load.py with 64 streaming clients, when the
#     carried cpp-httplib (.device/httplib) works on this machine
# With .gl carried (scripts/fetch-vulkan-debs.sh), PART=1 builds the Vulkan backend too, so that
# scripts/gpu-vulkan.sh afterwards on the same warm machine rebuilds nothing.
# PART=1 also runs tests/server/verified_serving_test.py with CUDA as the audited candidate.
# AUDIT_RATES (default "0.02"): the serve measurement once per --audit-rate (the audits' cost).
# PRESETS="" runs no benchmark; BENCH=0 only the serve measurement. BATCHES: the batch sizes
# (default 1,8,32,64,128); GEMM_MINS: LOCKSTEP_CUDA_BATCH_GEMM_MIN values to bench besides.
# Logs under $OUT; $OUT/summary.txt is the digest.
set -uo pipefail
cd "$(dirname "$0")/.."
LOGS="${OUT:-build-gpu/gpu-batch-logs}"
mkdir -p "$LOGS"
S="$LOGS/summary.txt"
if [ ! -d ../shared ] && [ -d .device/shared ]; then ln -sfn "$PWD/.device/shared" ../shared; fi
PART="${PART:-1}"

# cpp-httplib is not installed there: use the carried Debian copy if it links and runs.
SERVE=0
if [ -d .device/httplib ]; then
  H="$PWD/.device/httplib"
  export LD_LIBRARY_PATH="$H/lib:${LD_LIBRARY_PATH:-}"
  printf '#include <httplib.h>\nint main() { httplib::Server s; return 0; }\n' >/tmp/h.cpp
  if g++ -std=c++17 -DCPPHTTPLIB_OPENSSL_SUPPORT -DCPPHTTPLIB_ZLIB_SUPPORT -DCPPHTTPLIB_BROTLI_SUPPORT -I"$H/include" /tmp/h.cpp -L"$H/lib" -lcpp-httplib -o /tmp/h 2>"$LOGS/httplib.log" &&
    /tmp/h; then
    export PKG_CONFIG_PATH="$H/pkgconfig"
    SERVE=1
  fi
  echo "carried cpp-httplib usable: $SERVE" | tee -a "$S"
fi

VULKAN=0
if ls .gl/*.deb >/dev/null 2>&1 && source scripts/vulkan-env.sh; then
  export EXTRA_CMAKE_ARGS="$VULKAN_CMAKE_ARGS"
  VULKAN=1
fi

if [ "$PART" = 1 ]; then
  TEST_TIMEOUT=300 SKIP_BENCH=1 SKIP_SANITIZER=1 bash scripts/gpu-check.sh ||
    echo "gpu-check status $?" | tee -a "$S"
  if [ ! -x build-gpu/lockstep ] && [ "$SERVE" = 1 ]; then  # the carried library broke the build
    echo "build failed with the carried cpp-httplib; again without serve" | tee -a "$S"
    unset PKG_CONFIG_PATH
    SERVE=0
    rm -f build-gpu/CMakeCache.txt
    TEST_TIMEOUT=300 SKIP_BENCH=1 SKIP_SANITIZER=1 bash scripts/gpu-check.sh ||
      echo "gpu-check status $?" | tee -a "$S"
  fi
  extra_targets=""
  [ "$VULKAN" = 1 ] && extra_targets="backend_vulkan_vulkan_tests parity_vulkan_tests"
  ninja -C build-gpu -j"$(nproc)" parity_model_tests $extra_targets >>"$LOGS/build.log" 2>&1
  grep -E "lockstep: (CUDA|Vulkan) backend" "$LOGS/build.log" | sort -u | tee -a "$S"

  echo "== memcheck, batched kernels ($(date +%T))" | tee -a "$S"
  SAN=$(command -v compute-sanitizer || echo /usr/local/cuda/bin/compute-sanitizer)
  timeout 150 "$SAN" --tool memcheck --error-exitcode 9 build-gpu/tests/backend_cuda_gpu_tests \
    --gtest_filter='CudaMatvec.Batched*:CudaAttention.TokenRows*:CudaBatched.Sequences*' \
    >"$LOGS/memcheck.log" 2>&1
  echo "memcheck exit code $?" | tee -a "$S"
  grep -E "ERROR SUMMARY|PASSED|FAILED" "$LOGS/memcheck.log" | tail -4 | tee -a "$S"

  echo "== parity falsification with cuda ($(date +%T))" | tee -a "$S"
  timeout 120 build-gpu/tests/parity_model_tests \
    --gtest_filter='ParityFalsification.*:ParityTool.*' >"$LOGS/falsification.log" 2>&1
  grep -E "^\[  (PASSED|FAILED) |FAILED TEST" "$LOGS/falsification.log" | tee -a "$S"

  if [ "$SERVE" = 1 ]; then
    echo "== audits with cuda as the served candidate ($(date +%T))" | tee -a "$S"
    LOCKSTEP_TEST_CANDIDATE=cuda LOCKSTEP_VERDICT_CACHE=off timeout 200 python3 \
      tests/server/verified_serving_test.py build-gpu/lockstep >"$LOGS/verified-serving-cuda.log" 2>&1
    echo "exit code $?" | tee -a "$S"
    grep -E "^(PASS|FAIL|SKIP)|passed," "$LOGS/verified-serving-cuda.log" | tee -a "$S"
  fi
fi

if [ "$PART" != 1 ] && [ ! -x build-gpu/lockstep ]; then  # a fresh machine: build what PART 2 runs
  echo "== build lockstep ($(date +%T))" | tee -a "$S"
  cmake -S . -B build-gpu -G Ninja -DCMAKE_BUILD_TYPE=Release -DLOCKSTEP_CUDA=ON \
    -DCMAKE_CUDA_ARCHITECTURES="${CUDA_ARCH:-90}" \
    -DCMAKE_CUDA20_STANDARD_COMPILE_OPTION=-std=c++20 \
    -DCMAKE_CUDA20_EXTENSION_COMPILE_OPTION=-std=c++20 ${EXTRA_CMAKE_ARGS:-} \
    >"$LOGS/build.log" 2>&1 && ninja -C build-gpu -j"$(nproc)" lockstep >>"$LOGS/build.log" 2>&1 ||
    { grep -E "error|FAILED" "$LOGS/build.log" | head -20 | tee -a "$S"; exit 1; }
fi

for preset in ${PRESETS-qwen2.5-0.5b}; do
  f="/tmp/$preset-q4_k_m.gguf"
  echo "== $preset ($(date +%T))" | tee -a "$S"
  [ -f "$f" ] || build-gpu/lockstep make-model --arch qwen2 --preset "$preset" --quant q4_k_m \
    --seed 1 -o "$f" >>"$LOGS/make-model.log" 2>&1
  if [ "${BENCH:-1}" = 1 ]; then
    echo "-- bench, one sequence" | tee -a "$S"
    timeout 120 build-gpu/lockstep bench -m "$f" --backend cuda -p 512 -n 128 -r 2 \
      2>>"$LOGS/bench-$preset.log" | tee -a "$S"
    for mode in default --batch-invariant ${GEMM_MINS:-}; do
      echo "-- bench --batch, $mode" | tee -a "$S"
      extra=""
      gemm_min=""
      case "$mode" in
        default) ;;
        --*) extra="$mode" ;;
        *) gemm_min="$mode" ;;  # a LOCKSTEP_CUDA_BATCH_GEMM_MIN value
      esac
      env ${gemm_min:+LOCKSTEP_CUDA_BATCH_GEMM_MIN=$gemm_min} timeout 200 build-gpu/lockstep bench -m "$f" \
        --backend cuda --batch "${BATCHES:-1,8,32,64,128}" -p 256 -n 128 -r 1 $extra \
        2>>"$LOGS/bench-$preset.log" | tee -a "$S"
    done
  fi
  if [ "$SERVE" = 1 ] && [[ " ${SERVE_PRESETS:-$preset} " == *" $preset "* ]]; then
    for rate in ${AUDIT_RATES:-0.02}; do
      echo "-- serve --parallel 64 --audit-rate $rate + serve_load.py -c 64" | tee -a "$S"
      build-gpu/lockstep serve -m "$f" --backend cuda --parallel 64 -c 512 --port 18080 \
        --audit-rate "$rate" >"$LOGS/serve-$preset-$rate.log" 2>&1 &
      pid=$!
      for _ in $(seq 1 120); do
        curl -sf http://127.0.0.1:18080/health >/dev/null 2>&1 && break
        sleep 1
      done
      grep -m3 -E "parity|listening|http://" "$LOGS/serve-$preset-$rate.log" | tee -a "$S"
      timeout 240 python3 bench/serve_load.py --url http://127.0.0.1:18080 -c 64 -n 192 \
        --max-tokens 128 2>&1 | tee -a "$S"
      curl -s http://127.0.0.1:18080/metrics | grep -E "^lockstep_(audit|step)" | tee -a "$S"
      kill -INT "$pid"
      wait "$pid"
      echo "serve exit code $?" | tee -a "$S"
    done
  fi
done
echo "== done ($(date +%T))" | tee -a "$S"
