#!/usr/bin/env bash
# Checks that ctest discovers every test under a recent CMake (4.x) too, not only under the
# distribution's cmake that builds the tree. CMake 4's GoogleTestAddTests writes the discovered
# tests' properties differently, and a property value it cannot quote (a skip pattern ending in
# "]") once made the generated *_tests.cmake unparseable: ctest could not run at all there.
#
# What is checked, and why this way: gtest_discover_tests (DISCOVERY_MODE PRE_TEST) needs only the
# built test executables; when ctest starts it runs each with --gtest_list_tests and writes the
# test file with the CMake that runs ctest. So instead of a second build (about 10 more minutes on
# CI's two cores), this configures a second build directory with CMake 4 (seconds), links the
# test executables that build/ already has into it, and compares `ctest -N` there with build/.
# Run after scripts/build.sh. CMake 4 comes from PyPI into a venv under build/ (installed once,
# then reused); set LOCKSTEP_CMAKE4=/path/to/cmake to use another. Without either (no network
# for pip), the check is skipped with a message rather than failing the suite.
set -euo pipefail
cd "$(dirname "$0")/.."

cmake4="${LOCKSTEP_CMAKE4:-}"
if [ -z "$cmake4" ]; then
  venv=build/cmake4-venv
  if [ ! -x "$venv/bin/cmake" ]; then
    rm -rf "$venv"
    if ! { python3 -m venv "$venv" && "$venv/bin/pip" install -q 'cmake>=4,<5'; } >&2; then
      rm -rf "$venv"
      echo "check-test-discovery: SKIPPED: cannot install cmake>=4 from PyPI" >&2
      exit 0
    fi
  fi
  cmake4="$PWD/$venv/bin/cmake"
fi
ctest4="$(cd "$(dirname "$cmake4")" && pwd)/ctest"

dir=build/cmake4-discovery
"$cmake4" -S . -B "$dir" -G Ninja -DCMAKE_BUILD_TYPE=Release \
  -DLOCKSTEP_CUDA="${LOCKSTEP_CUDA:-AUTO}" >/dev/null
for exe in build/tests/*_tests; do
  if [ -x "$exe" ]; then ln -sf "$PWD/$exe" "$dir/tests/$(basename "$exe")"; fi
done

count() {  # the "Total Tests: N" of `ctest -N` run by $1 in directory $2; fails on any error
  local out
  out="$(cd "$2" && "$1" -N 2>&1)" || { echo "$out" >&2; return 1; }
  if grep -q "CMake Error\|_NOT_BUILT" <<<"$out"; then echo "$out" >&2; return 1; fi
  sed -n 's/^Total Tests: //p' <<<"$out"
}
n3="$(count ctest build)"
n4="$(count "$ctest4" "$dir")" || {
  echo "check-test-discovery: FAILED: $("$cmake4" --version | head -1) cannot list the tests" >&2
  exit 1
}
if [ "$n3" != "$n4" ] || [ "$n3" -eq 0 ]; then
  echo "check-test-discovery: FAILED: $(cmake --version | head -1) lists $n3 tests," \
    "$("$cmake4" --version | head -1) lists $n4" >&2
  exit 1
fi
echo "check-test-discovery: $n4 tests listed by both $(cmake --version | head -1) and" \
  "$("$cmake4" --version | head -1)" >&2
