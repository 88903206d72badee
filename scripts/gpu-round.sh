#!/usr/bin/env bash
# One device call that checks a round of CUDA work when the lent machine is scarce (~9 minutes on a
# 16-core H100/H200): build (with the carried cpp-httplib when it links, so that serve exists),
# every CUDA GPU test, the gate on the tiny models of each architecture, then as the budget allows:
# the batched bench of the routes on 0.5B (and 7B), the HTTP measurement with greedy clients, and
# bench -d on 0.5B. Logs under $OUT (else build-gpu/gpu-round-logs); $OUT/summary.txt the digest.
# BUDGET_S (default 540): steps that would not fit are skipped and say so. EXTRA_FILTER: a gtest
# filter run after the suite with the disabled tests allowed; MEMCHECK_FILTER: one run under
# compute-sanitizer (SANITIZER, default memcheck). SKIP: words of steps to leave out (tests
# parity bench depth); PRESETS: the bench models; KL=1: issue 12's KL table of stories260K on cpu and
# cuda; CPU_HOST=1: the CPU benches of issue 13 at the end.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
LOGS="${OUT:-build-gpu/gpu-round-logs}"
mkdir -p "$LOGS"
S="$LOGS/summary.txt"
START=$(date +%s)
step() { echo "== $* ($(date +%T), +$(($(date +%s) - START)) s)" | tee -a "$S"; }
left() { echo $((${BUDGET_S:-540} - ($(date +%s) - START))); }
skip() { [[ " ${SKIP:-} " == *" $1 "* ]]; }
if [ ! -d ../shared ] && [ -d .device/shared ]; then ln -sfn "$PWD/.device/shared" ../shared; fi
export LOCKSTEP_VERDICT_CACHE=off
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee -a "$S" || true
if [ -d .device/httplib ]; then
  export PKG_CONFIG_PATH="$PWD/.device/httplib/pkgconfig" LD_LIBRARY_PATH="$PWD/.device/httplib/lib:${LD_LIBRARY_PATH:-}"
fi

step "configure + build"
if ! { cmake -S . -B build-gpu -G Ninja -DCMAKE_BUILD_TYPE=Release -DLOCKSTEP_CUDA=ON \
  -DCMAKE_CUDA_ARCHITECTURES=90 -DCMAKE_CUDA20_STANDARD_COMPILE_OPTION=-std=c++20 \
  -DCMAKE_CUDA20_EXTENSION_COMPILE_OPTION=-std=c++20 >"$LOGS/build.log" 2>&1 &&
  ninja -C build-gpu -j"$(nproc)" lockstep backend_cuda_gpu_tests >>"$LOGS/build.log" 2>&1; }; then
  grep -E "error|FAILED" "$LOGS/build.log" | head -30 | tee -a "$S"
  exit 1
fi
L=build-gpu/lockstep
SERVE=1
if grep -q "building without .lockstep serve" "$LOGS/build.log"; then
  SERVE=0
  echo "no serve in this build (cpp-httplib not found)" | tee -a "$S"
fi

if ! skip tests; then
step "every CUDA GPU test"
timeout "${TEST_S:-230}" build-gpu/tests/backend_cuda_gpu_tests >"$LOGS/cuda-tests.log" 2>&1
echo "exit $?" | tee -a "$S"
grep -E "^\[  (PASSED|FAILED) |^\[==========\]|FAILED TEST" "$LOGS/cuda-tests.log" | tail -30 | tee -a "$S"
grep -E -B3 -A12 "Failure$" "$LOGS/cuda-tests.log" | head -120 | tee -a "$S"
grep -E "^\[ RUN" "$LOGS/cuda-tests.log" | tail -1 | tee -a "$S"
fi

if [ -n "${EXTRA_FILTER:-}" ]; then  # e.g. a DISABLED_ diagnosis
  step "extra: $EXTRA_FILTER"
  timeout 120 build-gpu/tests/backend_cuda_gpu_tests --gtest_also_run_disabled_tests \
    --gtest_filter="$EXTRA_FILTER" >"$LOGS/extra.log" 2>&1
  echo "exit $?" | tee -a "$S"
  grep -E "^\[diag|^\[  (PASSED|FAILED) " "$LOGS/extra.log" | head -150 | tee -a "$S"
fi
if [ -n "${MEMCHECK_FILTER:-}" ]; then
  step "compute-sanitizer ${SANITIZER:-memcheck}: $MEMCHECK_FILTER"
  SAN=$(command -v compute-sanitizer || echo /usr/local/cuda/bin/compute-sanitizer)
  timeout "${MEMCHECK_S:-120}" "$SAN" --tool "${SANITIZER:-memcheck}" --error-exitcode 9 \
    build-gpu/tests/backend_cuda_gpu_tests --gtest_filter="$MEMCHECK_FILTER" >"$LOGS/memcheck.log" 2>&1
  echo "memcheck exit $?" | tee -a "$S"
  grep -E "ERROR SUMMARY|^\[  (PASSED|FAILED) " "$LOGS/memcheck.log" | tail -4 | tee -a "$S"
fi

if ! skip parity; then
step "parity --backend cuda on the tiny models of each architecture"
for f in ../shared/models/arch/tiny-*.gguf ../shared/models/stories260K-Q4_K_M.gguf; do
  timeout 60 "$L" parity -m "$f" --backend cuda >"$LOGS/parity.log" 2>&1
  echo "$(basename "$f"): exit $? $(grep -m1 -E 'worst|cosine' "$LOGS/parity.log")" | tee -a "$S"
done
fi

for preset in ${PRESETS:-qwen2.5-0.5b qwen2.5-7b}; do
  f=/tmp/$preset-q4_k_m.gguf
  need=60; [ "$preset" = qwen2.5-7b ] && need=200
  if [ "$(left)" -lt "$need" ]; then echo "skipped $preset: $(left) s left" | tee -a "$S"; continue; fi
  step "$preset"
  [ -f "$f" ] || "$L" make-model --arch qwen2 --preset "$preset" --quant q4_k_m --seed 1 -o "$f" --quiet >>"$LOGS/make-model.log" 2>&1
  for mode in default old; do
    skip bench && break
    envs=(); [ "$mode" = old ] && envs=(LOCKSTEP_CUDA_BATCH_MMQ_MIN=0 LOCKSTEP_CUDA_BATCH_GEMM_MIN=16)
    echo "-- bench --batch ($mode)" | tee -a "$S"
    env "${envs[@]}" timeout 120 "$L" bench -m "$f" --backend cuda --parity off --batch "${BATCHES:-1,16,32,64,128}" \
      -p 256 -n 128 -r 1 2>>"$LOGS/bench-$preset.log" | tee -a "$S"
  done
  if [ "$preset" = qwen2.5-0.5b ] && [ "$(left)" -gt 150 ] && [ "$SERVE" = 1 ]; then
    step "serve --parallel 64, 64 greedy streaming clients (0.5B)"
    "$L" serve -m "$f" --backend cuda --parallel 64 -c 512 --port 18080 >"$LOGS/serve.log" 2>&1 &
    SP=$!
    for i in $(seq 1 120); do curl -sf http://127.0.0.1:18080/health >/dev/null 2>&1 && break; sleep 1; done
    timeout 120 python3 bench/serve_load.py --url http://127.0.0.1:18080 -c 64 -n 192 --max-tokens 128 \
      >"$LOGS/serve-load.log" 2>&1
    echo "serve_load exit $?" | tee -a "$S"
    tail -8 "$LOGS/serve-load.log" | tee -a "$S"
    curl -s http://127.0.0.1:18080/metrics | grep -E "^lockstep_step" | tee -a "$S"
    kill -INT "$SP"; wait "$SP"
  fi
  if [ "$preset" = qwen2.5-0.5b ] && [ "$(left)" -gt 60 ] && ! skip depth; then
    echo "-- bench -d 0,4096,16384 (0.5B)" | tee -a "$S"
    timeout 60 "$L" bench -m "$f" --backend cuda --parity off -p 512 -n 128 -d 0,4096,16384 -r 1 \
      2>>"$LOGS/bench-d.log" | tee -a "$S"
  fi
done
# Issue 12's report: the fast CPU path and CUDA against cpu-ref (KL, same top) on the real
# models that travel (stories260K in every quantization).
if [ "${KL:-0}" = 1 ]; then
  step "KL against cpu-ref: stories260K, cpu and cuda"
  LOCKSTEP="$L" BACKENDS="cpu cuda" timeout 240 bash scripts/kl-table.sh \
    ../shared/models/stories260K-ppl-sample.txt 256 8 ../shared/models/stories260K*.gguf \
    2>"$LOGS/kl.log" | tee -a "$S"
fi
# The fast CPU path on this host's cores (issue 13): its speed, then the gate's cost on the 7B
# with the CPU and with CUDA as the candidate (the models made above are reused).
if [ "${CPU_HOST:-0}" = 1 ]; then
  step "CPU host: cpu-bench-host.sh"
  LOCKSTEP_BIN="$PWD/$L" OUT="$LOGS/cpu-bench" bash scripts/cpu-bench-host.sh >/dev/null 2>&1
  cat "$LOGS/cpu-bench/summary.txt" >>"$S"
  for be in cpu cuda; do
    step "CPU host: gate-host.sh --backend $be"
    LOCKSTEP_BIN="$PWD/$L" BACKEND=$be MICRO=0 OUT="$LOGS/gate-$be" bash scripts/gate-host.sh >/dev/null 2>&1
    cat "$LOGS/gate-$be/summary.txt" >>"$S"
  done
fi
step "done"
