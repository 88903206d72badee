#!/usr/bin/env bash
# The parity gate's reference half on this host's CPU (no GPU needed): builds Release into
# build-cpu/ (LOCKSTEP_CUDA=OFF), makes the synthetic Qwen2.5-7B Q4_K_M (--seed 1) in /tmp, runs
# `lockstep parity --backend cpu --json` RUNS times and prints the reference's time, its probe
# prefill's time and the prefill's GFLOP/s (the fast CPU candidate's time is printed too but is
# not what this measures); then the reference matmul alone on 7B shapes with 8-, 32- and 64-row
# panels (8 is the loop order before panels), and the host's FMA peak (bench/fma_peak.cpp) at 1
# thread and at all. Everything goes to $OUT/summary.txt (or
# build-cpu/gate-host-logs). About 4-6 minutes on a 16-core host.
# Environment: PRESET (default qwen2.5-7b), RUNS (default 3), THREADS (lockstep's -t; default:
# lockstep's own choice), MICRO=0 skips the matmul benchmark, LOCKSTEP_BIN: a lockstep binary
# already built (no build, no matmul benchmark), BACKEND (default cpu; cuda: the gate's whole cost
# with CUDA as the candidate).
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
LOGS="${OUT:-build-cpu/gate-host-logs}"
mkdir -p "$LOGS"
S="$LOGS/summary.txt"
PRESET="${PRESET:-qwen2.5-7b}"
say() { echo "$*" | tee -a "$S"; }

say "== $(date -u +%FT%TZ) $(git rev-parse --short HEAD 2>/dev/null || echo '(no git)')"
lscpu | grep -E "^(Model name|CPU\(s\)|Thread\(s\) per core|L2 cache|L3 cache|CPU max MHz)" | tee -a "$S"
grep -o -m1 -E "avx512f" /proc/cpuinfo >/dev/null && say "avx512f: yes" || say "avx512f: no"
say "load: $(cut -d' ' -f1-3 /proc/loadavg)"
# The FMA peak, the denominator of the prefill's fraction of peak (a plain program: any host).
mkdir -p build-cpu
if ${CXX:-c++} -O2 -std=c++20 -pthread bench/fma_peak.cpp -o build-cpu/fma_peak 2>>"$LOGS/fma-peak.log"; then
  build-cpu/fma_peak "${THREADS:-$(nproc)}" 2>&1 | tee -a "$S"
fi

LS="${LOCKSTEP_BIN:-build-cpu/lockstep}"
if [ -z "${LOCKSTEP_BIN:-}" ]; then
  t0=$(date +%s)
  cmake -S . -B build-cpu -G Ninja -DCMAKE_BUILD_TYPE=Release -DLOCKSTEP_CUDA=OFF \
    >"$LOGS/build.log" 2>&1 &&
    ninja -C build-cpu -j"$(nproc)" lockstep reference_backend_bench >>"$LOGS/build.log" 2>&1 ||
    { say "build FAILED"; tail -30 "$LOGS/build.log"; exit 1; }
  say "build: $(($(date +%s) - t0)) s"
fi

F="/tmp/$PRESET-q4_k_m.gguf"
t0=$(date +%s)
[ -s "$F" ] || "$LS" make-model --arch qwen2 --preset "$PRESET" --quant q4_k_m \
  --seed 1 -o "$F" >>"$LOGS/make-model.log" 2>&1 ||
  { say "make-model FAILED"; tail -5 "$LOGS/make-model.log" | tee -a "$S"; exit 1; }
say "model: $F ($(du -h "$F" | cut -f1), $(($(date +%s) - t0)) s)"

# Multiply-adds of the probe prefill's matmuls: 64 positions x every weight matrix, lm_head
# included (the gate compares all 64 rows of logits). Attention itself is left out (< 1 %).
case "$PRESET" in
  qwen2.5-7b) E=3584 L=28 KV=512 FF=18944 V=152064 ;;
  qwen2.5-0.5b) E=896 L=24 KV=128 FF=4864 V=151936 ;;
  *) E=0 ;;
esac
GFLOP=$(python3 -c "E,L,KV,FF,V=$E,$L,${KV:-0},${FF:-0},${V:-0}
print('%.1f' % (2*64*(L*(2*E*E + 2*E*KV + 3*E*FF) + E*V) / 1e9))")
say "probe prefill: $GFLOP GFLOP of matmul (0 = unknown preset)"

THREADS_FLAG=()
[ -n "${THREADS:-}" ] && THREADS_FLAG=(-t "$THREADS")
for i in $(seq 1 "${RUNS:-3}"); do
  timeout 120 "$LS" parity -m "$F" --backend "${BACKEND:-cpu}" "${THREADS_FLAG[@]}" --json \
    2>>"$LOGS/parity.log" >"$LOGS/parity-$i.json"
  python3 - "$GFLOP" "$LOGS/parity-$i.json" <<'EOF' 2>&1 | tee -a "$S"
import json, sys
gflop, path = float(sys.argv[1]), sys.argv[2]
try:
    p = json.load(open(path))
except Exception as e:
    print("no JSON (%s)" % e); sys.exit(0)
pre = p["reference_prefill_ms"]
print("reference %6.0f ms (probe prefill %6.0f ms = %6.1f GFLOP/s), candidate %s %6.0f ms, %s"
      % (p["reference_ms"], pre, gflop / (pre / 1e3) if pre > 0 else 0,
         p.get("candidate", "?"), p.get("candidate_ms", 0), p.get("status", "?")))
EOF
done
if [ "${MICRO:-1}" = 1 ] && [ -x build-cpu/bench/reference_backend_bench ]; then
  say "reference matmul alone (Q4_K, all threads; args: tokens/threads/panel rows):"
  timeout 150 build-cpu/bench/reference_backend_bench --benchmark_filter='MatmulQ4K' \
    --benchmark_min_time=0.3 2>&1 | grep -E "^MatmulQ4K" | tee -a "$S"
fi
say "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
say "== done $(date -u +%T)"
