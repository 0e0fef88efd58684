#!/usr/bin/env bash
# ctest vla_eval / libero_sim: focusvla.vla_eval (vla-eval's model server) and the LIBERO simulator.
# Builds .venv-sim on first use (scripts/setup_sim: the one step that reaches PyPI), builds the wheel
# as run_python_package.sh does (pip wheel, no build isolation, .venv's torch; the persistent
# build/python-wheel-build keeps it incremental; a lock serializes it with the other wheel tests),
# installs it into a scratch virtual environment build/sim-venv that sees .venv-sim's packages, then
# .venv's (torch), through a .pth file, and runs the given test file there.
#   run_vla_eval.sh SOURCE_DIR BUILD_DIR PYTHON TEST_DATA TEST_FILE [pytest args...]
# Environment: FOCUSVLA_CLI (default BUILD_DIR/focusvla), FOCUSVLA_SIM_VENV (default SOURCE_DIR/.venv-sim).
set -euo pipefail
source_dir="$1" build_dir="$2" python="$3"
export FOCUSVLA_TEST_DATA="$4"
test_file="$5"
export FOCUSVLA_CLI="${FOCUSVLA_CLI:-$build_dir/focusvla}"
export CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}"
export PYTHONDONTWRITEBYTECODE=1
sim="${FOCUSVLA_SIM_VENV:-$source_dir/.venv-sim}"

(
  flock 9
  "$source_dir/scripts/setup_sim" "$sim"
) 9>"$build_dir/.setup-sim.lock"

wheels="$build_dir/sim-wheel"
venv="$build_dir/sim-venv-$(basename "$test_file" .py)"
(
  flock 9
  rm -rf "$wheels"
  cd "$source_dir"
  "$python" -m pip wheel . --no-deps --no-build-isolation --no-index -q \
    -C build-dir="$build_dir/python-wheel-build" -w "$wheels"
  wheel="$(ls "$wheels"/focusvla-*.whl)"
  rm -rf "$venv"
  "$sim/bin/python" -m venv --without-pip "$venv"
  purelib() { "$1" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])"; }
  printf '%s\n%s\n' "$(purelib "$sim/bin/python")" "$(purelib "$python")" \
    > "$(purelib "$venv/bin/python")/focusvla-test-base.pth"
  "$venv/bin/python" -m pip install -q --no-deps --no-index "$wheel"
) 9>"$build_dir/.python-wheel-build.lock"

export LIBERO_CONFIG_PATH="$sim/libero-config" MUJOCO_GL=egl PYOPENGL_PLATFORM=egl
cd "$build_dir"
exec timeout --foreground -k 30 1200 "$venv/bin/python" -m pytest -p no:cacheprovider -q -s -rs \
  -W "ignore::DeprecationWarning" -W "ignore::PendingDeprecationWarning" \
  "$source_dir/tests/python/$test_file" "${@:6}"
