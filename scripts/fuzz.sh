#!/usr/bin/env bash
# Fuzzes the GGUF reader with libFuzzer (clang, ASan + UBSan) for a given number of seconds.
#
#   scripts/fuzz.sh [SECONDS=60] [BUILD_DIR=build-fuzz]
#
# Configures a separate clang build, seeds a corpus with small valid files from gguf_fuzz_seeds,
# the small GGUFs in ../shared/quant and ../shared/models, and the regression inputs kept in
# tests/gguf/fuzz_regressions/, then runs one fuzzer process. Findings (crash-*, leak-*,
# timeout-*, oom-*) land in BUILD_DIR/fuzz-artifacts/; copy each one into
# tests/gguf/fuzz_regressions/ once fixed. Exit status: libFuzzer's (0 = no finding).
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${1:-60}
build=${2:-build-fuzz}

CC=clang CXX=clang++ cmake -S . -B "$build" -G Ninja -DLOCKSTEP_FUZZ=ON -DLOCKSTEP_TESTS=OFF \
  -DLOCKSTEP_CUDA=OFF -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
ninja -C "$build" -j2 gguf_reader_fuzz gguf_fuzz_seeds

seeds="$build/fuzz-seeds"
corpus="$build/fuzz-corpus"
artifacts="$build/fuzz-artifacts"
mkdir -p "$seeds" "$corpus" "$artifacts"
"$build/fuzz/gguf_fuzz_seeds" "$seeds"
for f in ../shared/quant/*.gguf ../shared/models/*.gguf; do
  case "$f" in *.dequant.gguf) continue ;; esac  # same layout as its quantized twin
  [ -f "$f" ] && cp -f "$f" "$seeds/"
done
if compgen -G "tests/gguf/fuzz_regressions/*" >/dev/null; then
  cp -f tests/gguf/fuzz_regressions/* "$seeds/"
fi

# One process; new inputs go to $corpus, the seed folder stays as generated.
exec "$build/fuzz/gguf_reader_fuzz" "$corpus" "$seeds" \
  -dict=fuzz/gguf.dict -max_total_time="$seconds" -max_len=65536 -timeout=10 \
  -rss_limit_mb=2048 -artifact_prefix="$artifacts/" -print_final_stats=1
