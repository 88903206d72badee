#!/usr/bin/env bash
# One-stop set-up: packages, build, default model. README command (1) runs this.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
bash scripts/build.sh
bash scripts/get-default-model.sh
