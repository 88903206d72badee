#!/usr/bin/env bash
# The mmq route (src/backend/cuda/mmq.cu: int8 tensor-core products for batched decode steps) on
# the GPU machine, in one call of under ~9 minutes:
#   1. configure + build build-gpu (as gpu-check.sh), lockstep and backend_cuda_gpu_tests
#   2. the op tests CudaMmq.* and the end-to-end CudaBatched.* (every route against the CPU
#      reference, the mmq route's batch invariance, the gate's batched probe), CudaMatvec.Batched*
#   3. compute-sanitizer memcheck of the op tests' small shapes (and racecheck of the fused
#      ones); the per-product timings of the
#      three routes (CudaThroughput.DISABLED_MmqAgainstOtherRoutes)
#   4. make-model qwen2.5-0.5b and qwen2.5-7b (q4_k_m, seed 1), one gated 0.5B bench (the parity
#      line: the gate probes each route's step size), then
#      `bench --parity off --batch $BATCHES -p 256 -n 128` per route setting of MODES:
#        default  the defaults (mmq from 16 rows, GEMMs off)
#        mmq2     LOCKSTEP_CUDA_BATCH_MMQ_MIN=2 (mmq for every batched step)
#        old      the previous default: GEMMs from 16 (LOCKSTEP_CUDA_BATCH_GEMM_MIN=16), mmq off
#        matvec   both off (--batch-invariant: the batched matvecs at every size)
#        tiled    the mmq route on its tiled kernel (LOCKSTEP_CUDA_MMQ_TILED=1)
# Logs under $OUT (else build-gpu/gpu-mmq-logs); $OUT/summary.txt is the digest.
# Environment: PRESETS (default "qwen2.5-0.5b qwen2.5-7b"), MODES (default "default old mmq2"),
# BATCHES (default 1,8,16,32,64,128), SKIP_TESTS=1, SKIP_SANITIZER=1, NCU=1 (profile one launch
# of each mmq kernel at a 7B shape with Nsight Compute), JOBS (default nproc),
# BUDGET_S (default 520): a step that would start with less than its need left of this many
# seconds since the start is skipped (and says so), so the call ends inside the device's limit.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
LOGS="${OUT:-build-gpu/gpu-mmq-logs}"
mkdir -p "$LOGS"
S="$LOGS/summary.txt"
JOBS="${JOBS:-$(nproc)}"
if [ ! -d ../shared ] && [ -d .device/shared ]; then ln -sfn "$PWD/.device/shared" ../shared; fi
if [ ! -d ../shared ] && [ -d .device/shared ]; then export LOCKSTEP_SHARED_DIR="$PWD/.device/shared"; fi
START=$(date +%s)
step() { echo "== $* ($(date +%T), $(($(date +%s) - START)) s)" | tee -a "$S"; }
left() { echo $((${BUDGET_S:-520} - ($(date +%s) - START))); }
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee -a "$S" || true

step "configure + build"
if ! { cmake -S . -B build-gpu -G Ninja -DCMAKE_BUILD_TYPE=Release -DLOCKSTEP_CUDA=ON \
  -DCMAKE_CUDA_ARCHITECTURES="${CUDA_ARCH:-90}" \
  -DCMAKE_CUDA20_STANDARD_COMPILE_OPTION=-std=c++20 \
  -DCMAKE_CUDA20_EXTENSION_COMPILE_OPTION=-std=c++20 >"$LOGS/build.log" 2>&1 &&
  ninja -C build-gpu -j"$JOBS" lockstep backend_cuda_gpu_tests >>"$LOGS/build.log" 2>&1; }; then
  grep -E "error|FAILED" "$LOGS/build.log" | head -40 | tee -a "$S"
  echo "build FAILED (see build.log)" | tee -a "$S"
  exit 1
fi
BIN=build-gpu/tests/backend_cuda_gpu_tests

if [ "${SKIP_TESTS:-0}" != 1 ]; then
  step "tests: CudaMmq.*, CudaBatched.*, CudaMatvec.Batched*"
  timeout 200 "$BIN" --gtest_filter='CudaMmq.*:CudaBatched.*:CudaMatvec.Batched*:CudaArch.BatchedDecode*' \
    >"$LOGS/tests.log" 2>&1
  echo "exit code $?" | tee -a "$S"
  grep -E "^\[ +(OK|FAILED|SKIPPED|PASSED) |tests ran|FAILED TEST" "$LOGS/tests.log" | tee -a "$S"
  # Failure details (with the seeds of SCOPED_TRACE) in the digest too.
  grep -E -B2 -A10 "Failure$" "$LOGS/tests.log" | head -80 | tee -a "$S"
fi

if [ "${SKIP_SANITIZER:-0}" != 1 ]; then
  step "compute-sanitizer memcheck: CudaMmq small shapes"
  SAN=$(command -v compute-sanitizer || echo /usr/local/cuda/bin/compute-sanitizer)
  timeout 120 "$SAN" --tool memcheck --error-exitcode 9 "$BIN" \
    --gtest_filter='CudaMmq.SmallShapes*:CudaMmq.NonFinite*' >"$LOGS/memcheck.log" 2>&1
  echo "memcheck exit code $?" | tee -a "$S"
  grep -E "ERROR SUMMARY|PASSED|FAILED" "$LOGS/memcheck.log" | tail -4 | tee -a "$S"
  # The tiled kernel's shared buffers (cp.async writes, two buffers, barriers between).
  timeout 150 "$SAN" --tool racecheck --error-exitcode 9 "$BIN" \
    --gtest_filter='CudaMmq.SmallShapes*' >"$LOGS/racecheck.log" 2>&1
  echo "racecheck exit code $?" | tee -a "$S"
  grep -E "RACECHECK SUMMARY|ERROR SUMMARY|PASSED|FAILED" "$LOGS/racecheck.log" | tail -4 | tee -a "$S"
fi

if [ "${SKIP_TESTS:-0}" != 1 ]; then
  step "per-product timings: mmq / batched matvec / F16 GEMM (7B and 0.5B shapes)"
  timeout 120 "$BIN" --gtest_also_run_disabled_tests \
    --gtest_filter='CudaThroughput.DISABLED_MmqAgainstOtherRoutes' >"$LOGS/routes.log" 2>&1
  echo "exit code $?" | tee -a "$S"
  grep -E "^\[bench\]|FAILED|Failure" "$LOGS/routes.log" | tee -a "$S"
fi

if [ "${NCU:-0}" = 1 ] && [ "$(left)" -gt 200 ]; then
  # One launch of each mmq kernel at the 7B ffn_up shape (Q4_K 18944 x 3584), B = 64: the
  # throughput test's 70th launch of each (3 warm-up + 20 timed calls at B = 8, 16 and 32 before).
  step "ncu: one tiled and one 16-row mmq launch, Q4_K 18944 x 3584, B 64"
  NCU_BIN=$(command -v ncu || echo /usr/local/cuda/bin/ncu)
  for k in mmq_tiled_kernel mmq_kernel; do
    timeout 150 "$NCU_BIN" --clock-control none --kernel-name-base function --kernel-name "$k" \
      --launch-skip 69 --launch-count 1 --section SpeedOfLight --section Occupancy \
      --section LaunchStats --section WarpStateStats --section SchedulerStats \
      --section MemoryWorkloadAnalysis --section ComputeWorkloadAnalysis \
      "$BIN" --gtest_also_run_disabled_tests \
      --gtest_filter='CudaThroughput.DISABLED_MmqAgainstOtherRoutes' >"$LOGS/ncu-$k.log" 2>&1
    echo "ncu $k exit code $?" | tee -a "$S"
    grep -E "Duration|Memory Throughput|DRAM Throughput|L2 Cache Throughput|L1/TEX Cache Throughput|Compute \(SM\)|Achieved Occupancy|Registers Per|Issue Slots Busy|No Eligible|Warp Cycles Per Issued|Stall" \
      "$LOGS/ncu-$k.log" | head -30 | tee -a "$S"
  done
fi

for preset in ${PRESETS:-qwen2.5-0.5b qwen2.5-7b}; do
  f="/tmp/$preset-q4_k_m.gguf"
  step "$preset"
  if [ ! -f "$f" ] && [ "$(left)" -lt 100 ]; then
    echo "skipped: $(left) s left" | tee -a "$S"
    continue
  fi
  [ -f "$f" ] || timeout 150 build-gpu/lockstep make-model --arch qwen2 --preset "$preset" \
    --quant q4_k_m --seed 1 -o "$f" >>"$LOGS/make-model.log" 2>&1
  [ -f "$f" ] || { echo "make-model failed (make-model.log)" | tee -a "$S"; continue; }
  if [ "$preset" = qwen2.5-0.5b ]; then
    # The gate with its batched probe (steps of 16 rows: the mmq route; of 2: the matvecs).
    echo "-- gated bench --batch 16 (parity line)" | tee -a "$S"
    timeout 120 build-gpu/lockstep bench -m "$f" --backend cuda --batch 16 -p 64 -n 16 -r 1 \
      >"$LOGS/gated-$preset.log" 2>&1
    echo "exit code $?" | tee -a "$S"
    grep -E "lockstep-parity|parity" "$LOGS/gated-$preset.log" | head -4 | tee -a "$S"
  fi
  for mode in ${MODES:-default old mmq2}; do
    echo "-- bench --batch, $mode" | tee -a "$S"
    t=$(left)
    if [ "$t" -lt 30 ]; then
      echo "skipped: $t s left" | tee -a "$S"
      continue
    fi
    envs=()
    extra=""
    case "$mode" in
      default) ;;
      mmq2) envs=(LOCKSTEP_CUDA_BATCH_MMQ_MIN=2) ;;
      tiled) envs=(LOCKSTEP_CUDA_MMQ_TILED=1) ;;
      old) envs=(LOCKSTEP_CUDA_BATCH_MMQ_MIN=0 LOCKSTEP_CUDA_BATCH_GEMM_MIN=16) ;;
      matvec) extra="--batch-invariant" ;;
      *) echo "unknown mode $mode" | tee -a "$S"; continue ;;
    esac
    env "${envs[@]}" timeout "$((t < 200 ? t : 200))" build-gpu/lockstep bench -m "$f" --backend cuda --parity off \
      --batch "${BATCHES:-1,8,16,32,64,128}" -p 256 -n 128 -r 1 $extra \
      2>>"$LOGS/bench-$preset.log" | tee -a "$S"
    echo "exit code ${PIPESTATUS[0]}" >>"$S"
  done
done
step "done"
