#!/usr/bin/env bash
# Fills .device/ (git-ignored) with what a GPU-machine call needs and that machine lacks, for the
# device tool's `carry`: (1) cpp-httplib as Debian 12 ships it (header, shared library, the
# OpenSSL / zlib / brotli headers its header includes, the libraries it links) with a pkg-config
# file relative to itself, so that `lockstep serve` builds there (scripts/gpu-*.sh set
# PKG_CONFIG_PATH and LD_LIBRARY_PATH to it); (2) a copy of ../shared's models, reference and
# quant folders (the tests read ../shared; the scripts link it to .device/shared). About 40 MB;
# the carry limit is 64 MiB, with .gl (scripts/fetch-vulkan-debs.sh, 8 MB) beside it.
# Needs libcpp-httplib-dev, libssl-dev, zlib1g-dev and libbrotli-dev installed here.
set -euo pipefail
cd "$(dirname "$0")/.."
H=.device/httplib
rm -rf "$H"
mkdir -p "$H/include" "$H/lib" "$H/pkgconfig"
cp /usr/include/httplib.h /usr/include/zlib.h /usr/include/zconf.h "$H/include/"
cp -r /usr/include/openssl /usr/include/brotli "$H/include/"
cp /usr/include/x86_64-linux-gnu/openssl/* "$H/include/openssl/"
cp -L /usr/lib/x86_64-linux-gnu/libcpp-httplib.so.0.11 "$H/lib/"
ln -s libcpp-httplib.so.0.11 "$H/lib/libcpp-httplib.so"
for l in libssl.so.3 libcrypto.so.3 libbrotlidec.so.1 libbrotlienc.so.1 libbrotlicommon.so.1; do
  cp -L "/lib/x86_64-linux-gnu/$l" "$H/lib/"
done
cat >"$H/pkgconfig/cpp-httplib.pc" <<'EOF'
prefix=${pcfiledir}/..
includedir=${prefix}/include
libdir=${prefix}/lib

Name: cpp-httplib
Description: cpp-httplib 0.11.4 from Debian 12, carried to the GPU machine
Version: 0.11.4
Libs: -L${libdir} -lcpp-httplib -Wl,-rpath-link,${libdir}
Libs.private: -pthread
Cflags: -I${includedir} -DCPPHTTPLIB_OPENSSL_SUPPORT -DCPPHTTPLIB_ZLIB_SUPPORT -DCPPHTTPLIB_BROTLI_SUPPORT
EOF
rm -rf .device/shared
mkdir -p .device/shared
cp -r ../shared/models ../shared/reference ../shared/quant ../shared/README.md .device/shared/
du -sh .device/httplib .device/shared
