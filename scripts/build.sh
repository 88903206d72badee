#!/usr/bin/env bash
# Configures and builds lockstep (Release) into ./build. CUDA is built when nvcc is found
# (LOCKSTEP_CUDA=AUTO); set LOCKSTEP_CUDA=OFF or ON in the environment to force it.
set -euo pipefail
cd "$(dirname "$0")/.."
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release -DLOCKSTEP_CUDA="${LOCKSTEP_CUDA:-AUTO}" >/dev/null
cmake --build build -j"$(nproc)"
