#!/usr/bin/env bash
# `cmake --install` the build into a scratch prefix, then build and run a program that uses
# find_package(focusvla); also configure one that uses add_subdirectory.
#   check_install.sh BUILD_DIR SOURCE_DIR TORCH_DIR CONFIG_JSON
set -euo pipefail
build="$1"; src="$2"; torch_dir="$3"; config="$4"
work="$build/install_check"
rm -rf "$work"
cmake --install "$build" --prefix "$work/prefix" >/dev/null
cmake -S "$src/tests/cmake/consumer" -B "$work/find" -G Ninja -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_PREFIX_PATH="$work/prefix" -DTorch_DIR="$torch_dir" >/dev/null
cmake --build "$work/find" >/dev/null
"$work/find/consumer" "$config"
"$work/find/consumer_c"
# focusvla::serve: installed with its headers exactly when the build has the server.
if [ -e "$build/libfocusvla_serve.a" ]; then
  test -e "$work/prefix/include/focusvla/serve/server.h" || { echo "the server library was installed without its headers" >&2; exit 1; }
  "$work/find/consumer_serve"
else
  test ! -e "$work/prefix/include/focusvla/serve" || { echo "serve headers installed without the server library" >&2; exit 1; }
fi
cmake -S "$src/tests/cmake/consumer" -B "$work/subdir" -G Ninja -DFOCUSVLA_SOURCE_DIR="$src" \
  -DTorch_DIR="$torch_dir" >/dev/null
grep -q "focusvla" "$work/subdir/build.ninja"
echo "find_package and add_subdirectory consumers configured; the installed one built and ran"
rm -rf "$work"
