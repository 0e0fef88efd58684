#!/usr/bin/env bash
# ctest ray_serve: focusvla.ray_serve on a local Ray cluster, driven by openpi's websocket client.
# Builds the wheel as run_python_package.sh does (pip wheel, no build isolation, .venv's torch; the
# persistent build/python-wheel-build keeps it incremental; a lock serializes it with other runs of
# this script), installs it into a scratch virtual environment build/ray-venv that sees .venv's
# packages (torch, ray[serve]) through a .pth file, so that Ray's workers, started with that
# python, import focusvla; then runs tests/python/test_ray_serve.py there. The clients run in
# .venv-openpi (openpi-client needs numpy<2).
#   run_ray_serve.sh SOURCE_DIR BUILD_DIR PYTHON [TEST_DATA] [pytest args...]
# Environment: FOCUSVLA_CLI (default BUILD_DIR/focusvla), FOCUSVLA_TEST_DATA (default TEST_DATA,
# else BUILD_DIR/test_data; the checkpoints come from the data_policy fixture).
set -euo pipefail
source_dir="$1" build_dir="$2" python="$3"
export FOCUSVLA_TEST_DATA="${4:-${FOCUSVLA_TEST_DATA:-$build_dir/test_data}}"
export FOCUSVLA_CLI="${FOCUSVLA_CLI:-$build_dir/focusvla}"
export FOCUSVLA_OPENPI_PYTHON="$source_dir/.venv-openpi/bin/python"
export CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}"
export PYTHONDONTWRITEBYTECODE=1

requirements="$source_dir/scripts/requirements-openpi.txt"
if [ ! -x "$FOCUSVLA_OPENPI_PYTHON" ] ||
   [ "$(cat "$source_dir/.venv-openpi/.focusvla-requirements" 2>/dev/null)" != "$(sha256sum "$requirements" | cut -d' ' -f1)" ]; then
  echo "run_ray_serve.sh: $source_dir/.venv-openpi is missing or out of date: run scripts/setup" >&2
  exit 1
fi
if ! "$python" -c "import ray.serve, fastapi, msgpack, yaml" 2>/dev/null; then
  echo "run_ray_serve.sh: $python lacks ray[serve] (scripts/requirements.txt): run scripts/setup" >&2
  exit 1
fi

wheels="$build_dir/ray-wheel"
venv="$build_dir/ray-venv"
(
  flock 9
  rm -rf "$wheels"
  cd "$source_dir"
  "$python" -m pip wheel . --no-deps --no-build-isolation --no-index -q \
    -C build-dir="$build_dir/python-wheel-build" -C cmake.define.FOCUSVLA_PYTHON_CORE_BUILD="$build_dir" -w "$wheels"
) 9>"$build_dir/.python-wheel-build.lock"
wheel="$(ls "$wheels"/focusvla-*.whl)"

rm -rf "$venv"
"$python" -m venv --without-pip "$venv"
purelib() { "$1" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])"; }
echo "$(purelib "$python")" > "$(purelib "$venv/bin/python")/focusvla-test-base.pth"
"$venv/bin/python" -m pip install -q --no-deps --no-index "$wheel"
test -x "$venv/bin/focusvla-ray"

cd "$build_dir"
# The test bounds every wait itself (cluster start 240 s, clients 300 s, recovery 90 s); the outer
# limit only guards against the unforeseen: --foreground signals pytest alone, whose SIGTERM handler
# stops the cluster (the Ray processes are not signalled behind the CLI's back).
exec timeout --foreground -k 30 840 "$venv/bin/python" -m pytest -p no:cacheprovider -q -s -rs \
  -W "ignore::DeprecationWarning" -W "ignore::PendingDeprecationWarning" \
  "$source_dir/tests/python/test_ray_serve.py" "${@:5}"
