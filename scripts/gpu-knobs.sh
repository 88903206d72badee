#!/usr/bin/env bash
# One GPU-machine call that measures environment knobs side by side on the same card:
#   1. scripts/gpu-check.sh: CUDA build + every GPU test (no sanitizer, no benchmarks), run with
#      the default settings
#   2. `lockstep bench --backend cuda` on synthetic Qwen2.5 Q4_K_M files for each knob setting,
#      the settings interleaved, ROUNDS times
#   3. with OPS=1, CudaThroughput.MatvecBandwidth (float activations vs the int8 path) and
#      OpBreakdown7B; with PROFILE=1, every kernel's time under ncu (scripts/ncu_kernels.py)
# Environment: PRESETS (default "qwen2.5-7b qwen2.5-0.5b"), KNOBS (space-separated settings, each
# "default" or comma-joined VAR=VALUE pairs, e.g. LOCKSTEP_CUDA_Q8_ROWS=4; default compares
# programmatic launch and prefetch), BENCH_ARGS (default "-p 512 -n 128 -r 3"), ROUNDS (default 2),
# OPS, PROFILE.
# Digest in $OUT/summary.txt (or build-gpu/gpu-knobs-logs/summary.txt).
set -uo pipefail
cd "$(dirname "$0")/.."
export OUT="${OUT:-build-gpu/gpu-knobs-logs}"
mkdir -p "$OUT"
S="$OUT/summary.txt"
if [ ! -d ../shared ] && [ -d .device/shared ]; then ln -sfn "$PWD/.device/shared" ../shared; fi

TEST_TIMEOUT=240 SKIP_BENCH=1 SKIP_SANITIZER=1 bash scripts/gpu-check.sh >"$OUT/check.log" 2>&1 ||
  echo "gpu-check failed (its lines in summary.txt)" | tee -a "$S"

if [ "${OPS:-0}" = 1 ]; then
  echo "== matvec bandwidth and 7B op breakdown ($(date +%T))" | tee -a "$S"
  timeout 90 build-gpu/tests/backend_cuda_gpu_tests --gtest_also_run_disabled_tests \
    --gtest_filter='CudaThroughput.*MatvecBandwidth:CudaThroughput.*OpBreakdown7B' \
    >"$OUT/ops.log" 2>&1
  grep "\[bench\]" "$OUT/ops.log" | tee -a "$S"
fi

KNOBS="${KNOBS:-default LOCKSTEP_CUDA_PREFETCH_MB=0 LOCKSTEP_CUDA_PDL=0}"
for preset in ${PRESETS:-qwen2.5-7b qwen2.5-0.5b}; do
  f="/tmp/$preset-q4_k_m.gguf"
  echo "== $preset ($(date +%T))" | tee -a "$S"
  build-gpu/lockstep make-model --arch qwen2 --preset "$preset" --quant q4_k_m --seed 1 -o "$f" \
    >>"$OUT/make-model.log" 2>&1
  for round in $(seq 1 "${ROUNDS:-2}"); do
    for knob in $KNOBS; do
      env_args=()
      [ "$knob" = default ] || IFS=, read -r -a env_args <<<"$knob"
      # shellcheck disable=SC2086
      env "${env_args[@]}" timeout 150 build-gpu/lockstep bench -m "$f" --backend cuda \
        ${BENCH_ARGS:--p 512 -n 128 -r 3} 2>>"$OUT/bench-cli.log" |
        grep -E "\| (pp|tg)[0-9]" | awk -F'|' -v k="$knob" -v r="$round" \
        '{printf "round %s  %-40s %s %10s t/s  (min %s max %s) %s GB/s\n", r, k, $8, $9, $10, $11, $13}' |
        tee -a "$S"
    done
  done
  if [ "${PROFILE:-0}" = 1 ]; then  # each kernel's time (ncu serialises them: no overlap)
    NCU=$(command -v ncu || echo /usr/local/cuda/bin/ncu)
    timeout 200 "$NCU" --csv --metrics gpu__time_duration.sum --log-file "/tmp/ncu-$preset.csv" \
      build-gpu/lockstep bench -m "$f" --backend cuda --parity off -p 0 -n 16 -r 1 \
      >/dev/null 2>>"$OUT/ncu.log"
    python3 scripts/ncu_kernels.py "/tmp/ncu-$preset.csv" --top 24 2>&1 | tee -a "$S"
  fi
  rm -f "$f"
done
echo "== done ($(date +%T))" | tee -a "$S"
