#!/usr/bin/env bash
# ctest python_package: builds the wheel (pip wheel, no build isolation: the torch, nanobind and
# scikit-build-core of .venv; the persistent build/python-wheel-build keeps rebuilds incremental),
# installs it into a scratch virtual environment that sees .venv's packages through a .pth file
# (torch without a second download), and runs tests/python/test_python_package.py there.
#   run_python_package.sh SOURCE_DIR BUILD_DIR PYTHON TEST_DATA
set -euo pipefail
source_dir="$1" build_dir="$2" python="$3" test_data="$4"
export CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}"
wheels="$build_dir/python-wheel"
venv="$build_dir/python-venv"

rm -rf "$wheels"
# The module links this build's library (FOCUSVLA_PYTHON_CORE_BUILD: cmake/FocusvlaPrebuiltCore.cmake)
# instead of compiling it again.
(cd "$source_dir" && "$python" -m pip wheel . --no-deps --no-build-isolation --no-index -q \
  -C build-dir="$build_dir/python-wheel-build" -C cmake.define.FOCUSVLA_PYTHON_CORE_BUILD="$build_dir" -w "$wheels")
wheel="$(ls "$wheels"/focusvla-*.whl)"

rm -rf "$venv"
"$python" -m venv --without-pip "$venv"
purelib() { "$1" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])"; }
echo "$(purelib "$python")" > "$(purelib "$venv/bin/python")/focusvla-test-base.pth"
"$venv/bin/python" -m pip install -q --no-deps --no-index "$wheel"

cd "$build_dir"
FOCUSVLA_TEST_DATA="$test_data" FOCUSVLA_EXPECT_PREFIX="$venv" \
  "$venv/bin/python" -m pytest -p no:cacheprovider -q -rs "$source_dir/tests/python/test_python_package.py" \
  "$source_dir/tests/python/test_python_threads.py" "$source_dir/tests/python/test_python_codec.py" \
  "$source_dir/tests/python/test_python_serving.py"
