#!/usr/bin/env bash
# Diagnosis on the GPU machine of two failures seen there on 2026-11-26 (bench/NOTES.md) that
# this development machine does not reproduce: the CPU reference's unit tests on that host's
# compiler and CPU (MatmulRef.BitIdenticalAcrossThreadsBatchesAndDot (now ...CloseToDot) failed there once), and the
# CUDA-vs-reference synthetic test with fresh seeds (CudaBackendSynthetic failed once, cosine below
# 0.999). Failure details go to stdout, which the device tool returns; it returns at most 8 files
# from $OUT, so the logs stay few.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-build-gpu/diagnose-logs}"
mkdir -p "$OUT"
[ -d ../shared ] || ln -sfn "$PWD/.device/shared" ../shared
c++ --version | head -1
cmake --version | head -1
cmake -S . -B build-gpu -G Ninja -DCMAKE_BUILD_TYPE=Release -DLOCKSTEP_CUDA=ON \
  -DCMAKE_CUDA_ARCHITECTURES=90 -DCMAKE_CUDA20_STANDARD_COMPILE_OPTION=-std=c++20 \
  -DCMAKE_CUDA20_EXTENSION_COMPILE_OPTION=-std=c++20 >"$OUT/build.log" 2>&1
grep -i "compiler identification" "$OUT/build.log"
ninja -C build-gpu -j"$(nproc)" backend_unit_tests quant_unit_tests backend_cuda_gpu_tests \
  >>"$OUT/build.log" 2>&1 || { tail -20 "$OUT/build.log"; exit 1; }
for bin in backend_unit_tests quant_unit_tests; do
  echo "== $bin"
  timeout 150 "build-gpu/tests/$bin" >"$OUT/$bin.txt" 2>&1
  grep -E "^\[  (PASSED|FAILED) " "$OUT/$bin.txt"
  grep -E -B3 -A10 "Failure$" "$OUT/$bin.txt" | head -60
done
for i in 1 2 3; do
  echo "== CudaBackendSynthetic, run $i"
  timeout 60 build-gpu/tests/backend_cuda_gpu_tests --gtest_filter='CudaBackendSynthetic.*' \
    >"$OUT/synthetic.txt" 2>&1
  grep -E "^\[  (PASSED|FAILED) " "$OUT/synthetic.txt" | head -2
  grep -E -A6 "Failure$" "$OUT/synthetic.txt" | head -24
done
