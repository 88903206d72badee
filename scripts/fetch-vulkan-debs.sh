#!/usr/bin/env bash
# Downloads, into .gl/ (git-ignored), the Debian 12 packages that let a machine with only a
# toolchain and NVIDIA's driver (the GPU machine: no Vulkan loader, headers or glslc, no
# internet) build and test the Vulkan backend: the loader, the headers, glslc and its library,
# the Khronos validation layer. scripts/gpu-vulkan.sh unpacks them there. Run once, here, before
# the device call that carries `.gl`. Their binaries need glibc >= 2.34 and libstdc++ with
# GLIBCXX_3.4.30 (Ubuntu 22.04 and later).
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .gl
o=()
if [ "$(dpkg --print-architecture)" != amd64 ]; then
  mkdir -p /tmp/amd64/partial
  o=(-oAPT::Architecture=amd64 -oAPT::Architectures=amd64 -oDir::State::Lists=/tmp/amd64)
  apt-get "${o[@]}" update -qq
fi
# NVIDIA's Vulkan ICD (libGLX_nvidia) needs the GL vendor-neutral dispatch libraries, which the
# GPU machine lacks: without them the loader finds "no Vulkan driver".
(cd .gl && apt-get "${o[@]}" download libvulkan1 libvulkan-dev glslc libshaderc1 \
  vulkan-validationlayers libegl1 libglvnd0 libopengl0 libgl1 libglx0 libgles2)
ls -la .gl
