#!/usr/bin/env bash
# Installs the Debian/Ubuntu packages lockstep needs to build and test. Idempotent: does nothing
# when everything is already there. The CUDA toolkit is optional and never installed here.
set -euo pipefail
pkgs=(cmake ninja-build g++ pkg-config python3 python3-pip python3-venv unzip
      libgtest-dev libgmock-dev libbenchmark-dev libcli11-dev nlohmann-json3-dev libcpp-httplib-dev
      libedit-dev chromium python3-jinja2)
missing=()
for p in "${pkgs[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "install-deps: installing ${missing[*]}" >&2
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi
