#!/usr/bin/env bash
# The Vulkan backend on the GPU machine (NVIDIA's Vulkan driver), in one call:
#   1. unpack the carried Vulkan packages (.gl/, from scripts/fetch-vulkan-debs.sh): the loader
#      into / (as the device tool's README says), the headers, glslc and the validation layer
#      into a prefix of their own (unpacking them into / could break the system)
#   2. find NVIDIA's ICD; configure build-gpu with LOCKSTEP_VULKAN=ON (and CUDA, for the
#      comparison) and build lockstep and the Vulkan test binaries
#   3. the Vulkan tests (op, end-to-end, CLI, falsification; label `vulkan`), validation on
#   4. synthetic Qwen2.5 0.5B and 7B Q4_K_M (make-model --seed 1): the gate with --backend vulkan
#      (--json: worst cosine), `lockstep bench` tg128 and pp512 with --backend vulkan and cuda
# Steps 1 and 2 are the same as scripts/gpu-batch.sh's with .gl carried (scripts/vulkan-env.sh):
# after it, on the same warm machine, nothing is rebuilt.
# Logs under $OUT (else build-gpu/gpu-vulkan-logs); $OUT/summary.txt is the digest (the device
# tool returns at most 8 files).
#
# How the lead runs it (from the repository root, with .gl prepared here once by
# `bash scripts/fetch-vulkan-debs.sh`; .gl is git-ignored, so it must be carried):
#   run(command="bash scripts/gpu-vulkan.sh", carry=[".gl"], timeout_s=600)
# The CUDA + Vulkan build, the tests and both benchmarks may not fit one 10-minute call: then
# `SKIP_BENCH=1 bash scripts/gpu-vulkan.sh` first and `SKIP_TESTS=1 bash scripts/gpu-vulkan.sh`
# second, on the same warm machine (build-gpu is kept between calls, so the second rebuilds
# nothing).
# Environment: PRESETS (default "qwen2.5-0.5b qwen2.5-7b"), JOBS (default nproc),
# SKIP_TESTS=1, SKIP_BENCH=1.
set -uo pipefail
cd "$(dirname "$0")/.."
LOGS="${OUT:-build-gpu/gpu-vulkan-logs}"
mkdir -p "$LOGS"
S="$LOGS/summary.txt"
JOBS="${JOBS:-$(nproc)}"
step() { echo "== $* ($(date +%T))" | tee -a "$S"; }

# The tests read ../shared: use a carried copy when the machine has none.
for copy in shared .device/shared; do
  if [ ! -e ../shared ] && [ -d "$copy" ]; then ln -sfn "$PWD/$copy" ../shared; fi
done

source scripts/vulkan-env.sh || exit 1
# A build made by scripts/gpu-batch.sh links the carried cpp-httplib.
if [ -d .device/httplib/lib ]; then
  export LD_LIBRARY_PATH="$PWD/.device/httplib/lib:$LD_LIBRARY_PATH"
  export PKG_CONFIG_PATH="$PWD/.device/httplib/pkgconfig"
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee -a "$S"

step "configure + build (build-gpu, LOCKSTEP_VULKAN=ON, LOCKSTEP_CUDA=ON)"
cmake -S . -B build-gpu -G Ninja -DCMAKE_BUILD_TYPE=Release -DLOCKSTEP_CUDA=ON \
  $VULKAN_CMAKE_ARGS \
  -DCMAKE_CUDA_ARCHITECTURES="${CUDA_ARCH:-90}" \
  -DCMAKE_CUDA20_STANDARD_COMPILE_OPTION=-std=c++20 \
  -DCMAKE_CUDA20_EXTENSION_COMPILE_OPTION=-std=c++20 >"$LOGS/build.log" 2>&1 &&
  ninja -C build-gpu -j"$JOBS" lockstep backend_vulkan_vulkan_tests parity_vulkan_tests \
    >>"$LOGS/build.log" 2>&1
if [ $? -ne 0 ]; then
  grep -E "error|FAILED|Vulkan" "$LOGS/build.log" | head -40 | tee -a "$S"
  echo "build FAILED (see build.log)" | tee -a "$S"
  exit 1
fi
grep -E "lockstep: (CUDA|Vulkan) backend" "$LOGS/build.log" | tee -a "$S"
L=build-gpu/lockstep
# Which device the backend takes, and that it serves stories260K (one line each).
$L run -m ../shared/models/stories260K.gguf --backend vulkan -p "Once upon a time" -n 16 \
  --temp 0 2>&1 | grep -E "backend|error" | head -3 | tee -a "$S"

status=0
if [ "${SKIP_TESTS:-0}" != 1 ]; then
  step "vulkan tests"
  for bin in backend_vulkan_vulkan_tests parity_vulkan_tests; do
    LOCKSTEP_VERDICT_CACHE=off timeout 240 "build-gpu/tests/$bin" >"$LOGS/$bin.log" 2>&1 ||
      status=1
    echo "-- $bin" | tee -a "$S"
    grep -E "^\[  (PASSED|FAILED|SKIPPED) |tests ran|^\[ vulkan" "$LOGS/$bin.log" |
      sort -u | head -20 | tee -a "$S"
    grep -E -A8 "Failure$" "$LOGS/$bin.log" | head -40 | tee -a "$S"
  done
fi

if [ "${SKIP_BENCH:-0}" != 1 ]; then
  for preset in ${PRESETS:-qwen2.5-0.5b qwen2.5-7b}; do
    f="/tmp/$preset-q4_k_m.gguf"
    step "$preset q4_k_m"
    [ -f "$f" ] || timeout 240 $L make-model --arch qwen2 --preset "$preset" --quant q4_k_m --seed 1 -o "$f" \
      >>"$LOGS/bench.log" 2>&1 || { echo "make-model failed" | tee -a "$S"; continue; }
    # The gate with the default probe; the worst cosine is in the --json parity object.
    if ! timeout 180 $L run -m "$f" -p "Hello" -n 4 --temp 0 --backend vulkan --json \
      2>"$LOGS/gate.log" | python3 scripts/gate_line.py vulkan 2>/dev/null | tee -a "$S"; then
      echo "gate run failed:" | tee -a "$S"
      tail -3 "$LOGS/gate.log" | tee -a "$S"
    fi
    for backend in vulkan cuda; do
      echo "-- bench --backend $backend" | tee -a "$S"
      if ! timeout 200 $L bench -m "$f" --backend "$backend" -p 512 -n 128 -r 2 \
        2>"$LOGS/bench-err.log" | tee -a "$S"; then
        echo "bench failed or timed out:" | tee -a "$S"
        tail -3 "$LOGS/bench-err.log" | tee -a "$S"
      fi
      cat "$LOGS/bench-err.log" >>"$LOGS/bench.log"
    done
    rm -f "$f"
  done
fi
step "done (status $status)"
exit $status
