#!/usr/bin/env bash
# The refusals of cmake/FocusvlaPrebuiltCore.cmake: a Python-module configure that is pointed at a
# build it must not link (FOCUSVLA_PYTHON_CORE_BUILD) stops with a message naming the problem:
# no build there, a build against another LibTorch, a build of another source tree. (Linking a
# good build is what the python_package test's wheel does.)
#   check_prebuilt_core.sh BUILD_DIR SOURCE_DIR PYTHON
set -euo pipefail
build="$1"; src="$2"; python="$3"
work="$build/prebuilt_core_check"
rm -rf "$work"
mkdir -p "$work"

# expect_refusal NAME CORE_DIR MESSAGE: the configure fails and its output holds MESSAGE.
expect_refusal() {
  local name="$1" core="$2" message="$3" out status=0
  out="$(cmake -S "$src" -B "$work/$name" -G Ninja -DFOCUSVLA_BUILD_PYTHON=ON -DFOCUSVLA_PYTHON_CORE_BUILD="$core" \
    -DPython_EXECUTABLE="$python" 2>&1)" || status=$?
  if [ "$status" -eq 0 ]; then
    echo "$name: the configure linked $core instead of refusing it" >&2
    exit 1
  fi
  # CMake wraps a message's lines at spaces: compare with the whitespace folded.
  if ! tr -s ' \n' '  ' <<<"$out" | grep -qF "$message"; then
    echo "$name: the configure failed without saying '$message':" >&2
    echo "$out" | tail -20 >&2
    exit 1
  fi
  echo "$name: refused ($message)"
}

# A copy of the real build's marker files and cache, with one cache entry changed.
fake_core() {
  local dir="$work/$1" key="$2" value="$3"
  mkdir -p "$dir"
  touch "$dir/focusvla-core-targets.cmake" "$dir/libfocusvla.a"
  sed -E "s|^($key):([A-Z]+)=.*|\1:\2=$value|" "$build/CMakeCache.txt" >"$dir/CMakeCache.txt"
  grep -q "^$key:[A-Z]*=$value\$" "$dir/CMakeCache.txt" || { echo "no $key in $build/CMakeCache.txt" >&2; exit 1; }
  echo "$dir"
}

expect_refusal missing "$work/no-such-build" "is not a built focusvla build directory"
expect_refusal other_torch "$(fake_core core_other_torch Torch_DIR /opt/other-libtorch/share/cmake/Torch)" \
  "was built against the LibTorch of /opt/other-libtorch/share/cmake/Torch"
expect_refusal other_source "$(fake_core core_other_source CMAKE_HOME_DIRECTORY /opt/other-focusvla)" \
  "is a build of /opt/other-focusvla"
rm -rf "$work"
