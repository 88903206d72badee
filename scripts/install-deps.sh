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
# The Vulkan backend's build (headers, glslc, SPIR-V headers) and its test device: Mesa's lavapipe
# (a Vulkan 1.3 device on the CPU) with the Khronos validation layer. Optional: where a
# distribution lacks one of them, the build goes on without Vulkan and its tests skip visibly.
vulkan_pkgs=(libvulkan-dev glslc spirv-headers mesa-vulkan-drivers vulkan-validationlayers)
vulkan_missing=()
for p in "${vulkan_pkgs[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || vulkan_missing+=("$p")
done
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"
if [ ${#missing[@]} -gt 0 ] || [ ${#vulkan_missing[@]} -gt 0 ]; then
  $SUDO apt-get update -qq
fi
if [ ${#missing[@]} -gt 0 ]; then
  echo "install-deps: installing ${missing[*]}" >&2
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi
if [ ${#vulkan_missing[@]} -gt 0 ]; then
  echo "install-deps: installing ${vulkan_missing[*]}" >&2
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${vulkan_missing[@]}" >/dev/null ||
    echo "install-deps: warning: could not install ${vulkan_missing[*]}; building without Vulkan" >&2
fi
