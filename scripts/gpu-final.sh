#!/usr/bin/env bash
# The GPU machine's share of the open issues in calls of at most ~9.5 minutes. Steps run in this
# order, those named in STEPS (default: all), each skipped with a line in the digest when the
# call's budget (BUDGET_S, default 560) has too little left for it:
#   build        CUDA (+ Vulkan when .gl is carried, + `serve` with the carried cpp-httplib)
#   cudatests    every CUDA GPU test
#   serving      tests/server/verified_serving_test.py with CUDA as the audited candidate
#                (ctest's server_verified_serving_cuda)
#   kl           issue 12's KL table: stories260K in every quantization, cpu and cuda vs cpu-ref
#   arch         issue 12: `parity --backend cuda` on the tiny model of each architecture
#   audit05      bench/audit_cost.py on synthetic Qwen2.5 0.5B Q4_K_M: --audit-rate 0, 0.02, 1
#   serveload    issue 10: 0.5B `bench --batch 64` and `serve --parallel 64` under 64 greedy
#                streaming clients (bench/serve_load.py), /metrics' step times
#   vulkantests  the Vulkan test binaries on NVIDIA's Vulkan driver, one process per suite
#                (those matching the regex VULKAN_TEST_GROUPS when set)
#   depth        issue 14: 7B `bench -d 0,4096,16384`
#   knobs        7B tg128 under each speed-only CUDA knob
#   audit7b      audit05 on the 7B shape
#   vulkanbench  the gate and `bench` tg128/pp512 with --backend vulkan and cuda (PRESETS), and
#                a decode profile per shader (LOCKSTEP_VULKAN_PROFILE)
#   vulkanknobs  7B Vulkan tg128 under each forced matvec shape (LOCKSTEP_VULKAN_MATVEC_TEAM/_ROWS;
#                VULKAN_SHAPES lists them as team,rows[,groups])
#   vulkanenv    for each entry of VULKAN_ENVS (space-separated; an entry is none or VAR=value
#                pairs joined by commas): 0.5B and 7B Vulkan tg128 -r 2 under those settings
#                (and a prompt of ENV_P tokens when set)
#   vulkanprefill  0.5B and 7B Vulkan pp16 and pp512 under each entry of PREFILL_ENVS (default:
#                the defaults, no tiled products, tiled from 32 tokens, chunks of 64 and 256), and
#                a 7B prompt's profile
#   cpuhost      the fast CPU path on the host's cores (scripts/cpu-bench-host.sh with this build's
#                binary: 0.5B and 7B Q4_K_M pp128, pp512, tg128; ~8 minutes, issue 13)
#   vulkanvariants  for each sed expression in VARIANTS (separated by '|'): apply it to the Vulkan
#                shaders named in VARIANT_FILES (default dot_unit.glsl), rebuild lockstep, bench
#                0.5B and 7B Vulkan tg128 behind a strict gate; the sources are restored afterwards
# Carry `.device` (scripts/prepare-device-carry.sh) and `.gl` (scripts/fetch-vulkan-debs.sh);
# BUILD_TARGETS narrows the build (e.g. to lockstep alone). On the same warm machine a second call
# rebuilds nothing (build-gpu is kept). $OUT/summary.txt is the digest and $OUT/logs.tgz every
# log.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
# The device tool returns at most 8 files: logs go to a folder of their own, and $OUT gets the
# digest and one tarball of them.
LOGS=build-gpu/gpu-final-logs
rm -rf "$LOGS"
mkdir -p "$LOGS"
S="$LOGS/summary.txt"
START=$(date +%s)
left() { echo $((${BUDGET_S:-560} - ($(date +%s) - START))); }
step() { echo "== $* ($(date +%T), +$(($(date +%s) - START)) s)" | tee -a "$S"; }
# A step runs when named in STEPS and when at least $2 seconds of the budget are left.
want() {
  [[ " ${STEPS:-build cudatests serving kl arch audit05 serveload vulkantests depth knobs audit7b vulkanbench vulkanknobs} " == *" $1 "* ]] || return 1
  if [ "$(left)" -lt "$2" ]; then echo "skipped $1: $(left) s left" | tee -a "$S"; return 1; fi
  step "$1"
}
pack() {
  [ -n "${OUT:-}" ] || return 0
  cp "$S" "$OUT/" && tar -C "$LOGS" -czf "$OUT/logs.tgz" .
}
trap pack EXIT

if [ ! -d ../shared ] && [ -d .device/shared ]; then ln -sfn "$PWD/.device/shared" ../shared; fi
export LOCKSTEP_VERDICT_CACHE=off
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee -a "$S"
if [ -d .device/httplib ]; then
  export PKG_CONFIG_PATH="$PWD/.device/httplib/pkgconfig"
  export LD_LIBRARY_PATH="$PWD/.device/httplib/lib:${LD_LIBRARY_PATH:-}"
fi
VULKAN_CMAKE_ARGS="-DLOCKSTEP_VULKAN=OFF"
if ls .gl/*.deb >/dev/null 2>&1; then source scripts/vulkan-env.sh || true; fi
L=build-gpu/lockstep

if want build 60; then
  targets="lockstep backend_cuda_gpu_tests"
  [ "$VULKAN_CMAKE_ARGS" != "-DLOCKSTEP_VULKAN=OFF" ] &&
    targets+=" backend_vulkan_vulkan_tests parity_vulkan_tests"
  targets="${BUILD_TARGETS:-$targets}"
  # shellcheck disable=SC2086
  if ! { cmake -S . -B build-gpu -G Ninja -DCMAKE_BUILD_TYPE=Release -DLOCKSTEP_CUDA=ON \
    $VULKAN_CMAKE_ARGS -DCMAKE_CUDA_ARCHITECTURES=90 \
    -DCMAKE_CUDA20_STANDARD_COMPILE_OPTION=-std=c++20 \
    -DCMAKE_CUDA20_EXTENSION_COMPILE_OPTION=-std=c++20 >"$LOGS/build.log" 2>&1 &&
    ninja -C build-gpu -j"$(nproc)" $targets >>"$LOGS/build.log" 2>&1; }; then
    grep -E "error|FAILED" "$LOGS/build.log" | head -30 | tee -a "$S"
    exit 1
  fi
  grep -E "lockstep: (CUDA|Vulkan) backend|building without" "$LOGS/build.log" | sort -u | tee -a "$S"
fi

if want cudatests 150; then
  timeout 200 build-gpu/tests/backend_cuda_gpu_tests >"$LOGS/cuda-tests.log" 2>&1
  echo "exit $?" | tee -a "$S"
  grep -E "^\[  (PASSED|FAILED) |^\[==========\]|FAILED TEST" "$LOGS/cuda-tests.log" | tail -20 | tee -a "$S"
  grep -E -B3 -A12 "Failure$" "$LOGS/cuda-tests.log" | head -80 | tee -a "$S"
fi

if want serving 120; then
  LOCKSTEP_TEST_CANDIDATE=cuda timeout 200 python3 tests/server/verified_serving_test.py "$L" \
    >"$LOGS/verified-serving-cuda.log" 2>&1
  echo "exit code $?" | tee -a "$S"
  grep -E "^(PASS|FAIL|SKIP)|passed," "$LOGS/verified-serving-cuda.log" | tee -a "$S"
fi

if want kl 60; then
  LOCKSTEP="$L" BACKENDS="cpu cuda" timeout 180 bash scripts/kl-table.sh \
    ../shared/models/stories260K-ppl-sample.txt 256 8 ../shared/models/stories260K*.gguf \
    2>"$LOGS/kl.log" | tee -a "$S"
fi

if want arch 30; then
  for f in ../shared/models/arch/tiny-*.gguf ../shared/models/stories260K-Q4_K_M.gguf; do
    timeout 60 "$L" parity -m "$f" --backend cuda >"$LOGS/parity-$(basename "$f").log" 2>&1
    echo "$(basename "$f"): exit $? $(grep -E "verdict" "$LOGS/parity-$(basename "$f").log")" |
      tee -a "$S"
  done
fi

audit() {  # preset, seconds of drain wait
  local f=/tmp/$1-q4_k_m.gguf
  [ -f "$f" ] || "$L" make-model --arch qwen2 --preset "$1" --quant q4_k_m --seed 1 -o "$f" \
    --quiet >>"$LOGS/make-model.log" 2>&1
  PYTHONUNBUFFERED=1 timeout "$(($(left) - 10))" python3 bench/audit_cost.py "$L" "$f" \
    --requests 192 --clients 64 --parallel 64 --tokens 128 --threads "$(nproc)" --rounds 1 \
    --drain-wait "$2" 2>&1 | tee -a "$S"
}
want audit05 120 && audit qwen2.5-0.5b 30
if want serveload 100; then
  f=/tmp/qwen2.5-0.5b-q4_k_m.gguf
  [ -f "$f" ] || "$L" make-model --arch qwen2 --preset qwen2.5-0.5b --quant q4_k_m --seed 1 -o "$f" \
    --quiet >>"$LOGS/make-model.log" 2>&1
  timeout 60 "$L" bench -m "$f" --backend cuda --parity off --batch 64 -p 256 -n 128 -r 1 \
    2>>"$LOGS/bench-batch.log" | tee -a "$S"
  for rate in 0 0.02; do
    echo "-- serve --parallel 64 --audit-rate $rate + serve_load.py -c 64" | tee -a "$S"
    "$L" serve -m "$f" --backend cuda --parallel 64 -c 512 --port 18080 --audit-rate "$rate" \
      >"$LOGS/serve-$rate.log" 2>&1 &
    sp=$!
    for _ in $(seq 1 90); do curl -sf http://127.0.0.1:18080/health >/dev/null 2>&1 && break; sleep 1; done
    timeout 90 python3 bench/serve_load.py --url http://127.0.0.1:18080 -c 64 -n 192 \
      --max-tokens 128 >"$LOGS/serve-load-$rate.log" 2>&1
    echo "serve_load exit $?" | tee -a "$S"
    tail -1 "$LOGS/serve-load-$rate.log" | tee -a "$S"
    curl -s http://127.0.0.1:18080/metrics | grep -E "^lockstep_step" | tee -a "$S"
    kill -INT "$sp"; wait "$sp"
  done
fi
if want vulkantests 120; then
  # One process per test (all its parameters): NVIDIA's driver refused instances after ~20
  # contexts in one process (VK_ERROR_INCOMPATIBLE_DRIVER, or no ICD found), which skipped the rest.
  for bin in backend_vulkan_vulkan_tests parity_vulkan_tests; do
    # Test names without their parameter, each with its suite: "Types/VulkanMatmul.MatchesFloat64".
    for group in $("build-gpu/tests/$bin" --gtest_list_tests | awk '/^[A-Za-z]/ { s = $1; next }
        { sub(/\/.*/, "", $1); print s $1 }' | uniq | grep -E "${VULKAN_TEST_GROUPS:-.}"); do
      # 240 s: TiledGemmMatchesFloat64 takes ~10 s a weight type on NVIDIA's driver (18 types).
      timeout 240 "build-gpu/tests/$bin" --gtest_filter="$group*" >>"$LOGS/$bin.log" 2>&1
      echo "-- $bin $group exit $?" >>"$LOGS/$bin.log"
    done
    echo "-- $bin" | tee -a "$S"
    grep -cE "^\[       OK" "$LOGS/$bin.log" | sed 's/^/passed: /' | tee -a "$S"
    grep -E "^\[  (FAILED|SKIPPED) \] [A-Za-z].* \(" "$LOGS/$bin.log" | sort -u | head -30 | tee -a "$S"
    grep -E "^skipped:" "$LOGS/$bin.log" | sort | uniq -c | tee -a "$S"
    grep -E -A8 "Failure$" "$LOGS/$bin.log" | head -40 | tee -a "$S"
  done
fi
make7b() {
  [ -f /tmp/qwen2.5-7b-q4_k_m.gguf ] || "$L" make-model --arch qwen2 --preset qwen2.5-7b \
    --quant q4_k_m --seed 1 -o /tmp/qwen2.5-7b-q4_k_m.gguf --quiet >>"$LOGS/make-model.log" 2>&1
}
if want depth 150; then
  make7b
  timeout 100 "$L" bench -m /tmp/qwen2.5-7b-q4_k_m.gguf --backend cuda --parity off -c 16896 \
    -p 512 -n 128 -d 0,4096,16384 -r 1 2>>"$LOGS/bench-depth.log" | tee -a "$S"
fi
# 7B single-sequence decode under each CUDA knob that changes speed only (a slowdown since the
# 2026-11-26 H100 runs: 229 against 343 tok/s).
if want knobs 120; then
  make7b
  for knob in none LOCKSTEP_CUDA_PDL=0 LOCKSTEP_CUDA_PREFETCH_MB=0 LOCKSTEP_CUDA_Q8_ROWS=1 \
    LOCKSTEP_CUDA_Q8_ROWS=4 LOCKSTEP_CUDA_Q6K_INT8_MAX_COLS=32768 LOCKSTEP_CUDA_PRECISION=f32; do
    echo "-- $knob" | tee -a "$S"
    env ${knob/none/} timeout 60 "$L" bench -m /tmp/qwen2.5-7b-q4_k_m.gguf --backend cuda \
      --parity off -p 64 -n 128 -r 2 2>>"$LOGS/bench-knobs.log" | grep -E "tg128" | tee -a "$S"
  done
fi
want audit7b 240 && audit qwen2.5-7b 45
if want vulkanbench 120; then
  for preset in ${PRESETS:-qwen2.5-0.5b qwen2.5-7b}; do
    f=/tmp/$preset-q4_k_m.gguf
    [ "$(left)" -lt 90 ] && { echo "skipped vulkan bench $preset: $(left) s left" | tee -a "$S"; continue; }
    echo "-- $preset" | tee -a "$S"
    [ -f "$f" ] || "$L" make-model --arch qwen2 --preset "$preset" --quant q4_k_m --seed 1 -o "$f" \
      --quiet >>"$LOGS/make-model.log" 2>&1
    timeout 120 "$L" run -m "$f" -p "Hello" -n 4 --temp 0 --backend vulkan --json \
      2>"$LOGS/gate-vulkan.log" | python3 scripts/gate_line.py vulkan 2>&1 | tee -a "$S"
    for backend in vulkan cuda; do
      timeout 150 "$L" bench -m "$f" --backend "$backend" -p 512 -n 128 -r 2 \
        2>>"$LOGS/bench-vulkan.log" | tee -a "$S"
    done
    # Where a Vulkan decode step's time goes: GPU time per shader and grid.
    LOCKSTEP_VULKAN_PROFILE=1 timeout 100 "$L" bench -m "$f" --backend vulkan --parity off -p 0 \
      -n 128 -r 1 2>"$LOGS/profile-vulkan-$preset.log" | grep tg128 | tee -a "$S"
    grep -A16 "vulkan profile on" "$LOGS/profile-vulkan-$preset.log" |
      grep -v "^vulkan pipeline" | tee -a "$S"
    # The decode products' compiler statistics (registers, binary size), where the driver has them.
    grep -E "^vulkan pipeline matvec(_q8)?_(q4_k|q6_k|q5_0|q8_0)[ :]" \
      "$LOGS/profile-vulkan-$preset.log" | tee -a "$S"
  done
fi
if want vulkanknobs 60; then
  make7b
  for shape in ${VULKAN_SHAPES:-0,0 32,2 32,4 16,1 8,1}; do
    set -- ${shape//,/ }
    echo "-- LOCKSTEP_VULKAN_MATVEC_TEAM=$1 LOCKSTEP_VULKAN_MATVEC_ROWS=$2" \
      "LOCKSTEP_VULKAN_MATVEC_GROUPS=${3:-0}" | tee -a "$S"
    LOCKSTEP_VULKAN_MATVEC_TEAM=$1 LOCKSTEP_VULKAN_MATVEC_ROWS=$2 \
      LOCKSTEP_VULKAN_MATVEC_GROUPS=${3:-0} timeout 40 "$L" bench \
      -m /tmp/qwen2.5-7b-q4_k_m.gguf --backend vulkan --parity off -p 0 -n 128 -r 2 \
      2>>"$LOGS/bench-vulkan-knobs.log" | grep -E "tg128" | tee -a "$S"
  done
fi
make05() {
  [ -f /tmp/qwen2.5-0.5b-q4_k_m.gguf ] || "$L" make-model --arch qwen2 --preset qwen2.5-0.5b \
    --quant q4_k_m --seed 1 -o /tmp/qwen2.5-0.5b-q4_k_m.gguf --quiet >>"$LOGS/make-model.log" 2>&1
}
# `bench` of 0.5B and 7B on Vulkan (the arguments after the log's name) under each entry of $1
# (space-separated; an entry is none or VAR=value pairs joined by commas).
bench_envs() {
  local entries=$1 log=$2 entry settings m
  shift 2
  for entry in $entries; do
    [ "$(left)" -lt 30 ] && { echo "skipped '$entry': $(left) s left" | tee -a "$S"; break; }
    settings=${entry//,/ }
    settings=${settings/none/}
    echo "-- ${settings:-defaults}" | tee -a "$S"
    for m in /tmp/qwen2.5-0.5b-q4_k_m.gguf /tmp/qwen2.5-7b-q4_k_m.gguf; do
      env $settings timeout 60 "$L" bench -m "$m" --backend vulkan --parity off "$@" -r 2 \
        2>>"$LOGS/$log" | grep -E "tg128|pp[0-9]" | tee -a "$S"
    done
  done
}
if want vulkanenv 60; then
  make7b
  make05
  bench_envs "${VULKAN_ENVS:-none LOCKSTEP_VULKAN_FUSE_NORM=1 LOCKSTEP_VULKAN_MATVEC_GROUPS=1056 none}" \
    bench-vulkan-env.log -p "${ENV_P:-0}" -n 128
fi
if want vulkanprefill 60; then
  make7b
  make05
  bench_envs "${PREFILL_ENVS:-none LOCKSTEP_VULKAN_GEMM_MIN_TOKENS=0 LOCKSTEP_VULKAN_GEMM_MIN_TOKENS=32 LOCKSTEP_VULKAN_MAX_BATCH=64 LOCKSTEP_VULKAN_MAX_BATCH=256}" \
    bench-vulkan-prefill.log -p 16,512 -n 0
  # Where a 7B prompt's time goes: GPU time per shader and grid.
  env ${PREFILL_PROFILE_ENV:-} LOCKSTEP_VULKAN_PROFILE=1 timeout 60 "$L" bench \
    -m /tmp/qwen2.5-7b-q4_k_m.gguf --backend vulkan --parity off -p 512 -n 0 -r 1 \
    2>"$LOGS/profile-vulkan-prefill.log" | grep pp512 | tee -a "$S"
  grep -A16 "vulkan profile on" "$LOGS/profile-vulkan-prefill.log" | grep -v "^vulkan pipeline" |
    tee -a "$S"
fi
if want vulkanvariants 60; then
  make7b
  files=${VARIANT_FILES:-dot_unit.glsl}
  IFS='|' read -ra variants <<<"${VARIANTS:-}"
  for v in "" "${variants[@]}"; do
    [ "$(left)" -lt 45 ] && { echo "skipped variant '$v': $(left) s left" | tee -a "$S"; break; }
    echo "-- variant: ${v:-as committed}" | tee -a "$S"
    for f in $files; do
      cp "src/backend/vulkan/shaders/$f" "$LOGS/$f.orig"
      [ -n "$v" ] && sed -i -e "$v" "src/backend/vulkan/shaders/$f"
    done
    cmake --build build-gpu --target lockstep -j 16 >>"$LOGS/build-variants.log" 2>&1 ||
      echo "build failed" | tee -a "$S"
    for m in /tmp/qwen2.5-0.5b-q4_k_m.gguf /tmp/qwen2.5-7b-q4_k_m.gguf; do
      # strict: a variant that computes wrong rows fails its gate instead of timing garbage.
      [ -f "$m" ] && { timeout 50 "$L" bench -m "$m" --backend vulkan --parity strict -p 0 -n 128 \
        -r 2 2>>"$LOGS/bench-vulkan-variants.log" | grep -E "tg128" | tee -a "$S" ||
        echo "failed: $(tail -1 "$LOGS/bench-vulkan-variants.log")" | tee -a "$S"; }
    done
    for f in $files; do cp "$LOGS/$f.orig" "src/backend/vulkan/shaders/$f"; done
  done
fi
if want cpuhost 300; then
  LOCKSTEP_BIN="$PWD/$L" OUT="$LOGS/cpu-bench" bash scripts/cpu-bench-host.sh >/dev/null 2>&1
  tee -a "$S" <"$LOGS/cpu-bench/summary.txt"
fi
step "done"
