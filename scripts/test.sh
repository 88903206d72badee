#!/usr/bin/env bash
# The whole test suite: packages, build, then every ctest label (unit, model; gpu tests skip
# visibly without a CUDA device). README command (2) and .ci/run both run exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
bash scripts/build.sh
# The default model enables the SmolLM2 model tests; they skip visibly when it cannot be fetched.
bash scripts/get-default-model.sh || echo "test: default model unavailable; its tests will skip" >&2
# Test discovery under CMake 4 as well (no second build: see the script for how).
bash scripts/check-test-discovery.sh
cd build
ctest --output-on-failure -j"$(nproc)" --timeout 1500
