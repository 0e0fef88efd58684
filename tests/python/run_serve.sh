#!/usr/bin/env bash
# ctest serve_openpi / serve_asan: tests/python/test_serve*.py (pytest) drive `focusvla serve` with openpi's websocket
# client from PyPI (openpi-client, which needs numpy<2: its own virtual environment .venv-openpi,
# made by scripts/setup from scripts/requirements-openpi.txt) and checks it against `focusvla act`.
#   run_serve.sh SOURCE_DIR BUILD_DIR [TEST_DATA]
# Environment: FOCUSVLA_CLI (default BUILD_DIR/focusvla), FOCUSVLA_TEST_DATA (default TEST_DATA,
# else BUILD_DIR/test_data; the policy checkpoints come from the data_policy fixture).
set -euo pipefail
source_dir="$1" build_dir="$2"
venv="$source_dir/.venv-openpi"
requirements="$source_dir/scripts/requirements-openpi.txt"
if [ ! -x "$venv/bin/python" ]; then
  echo "run_serve.sh: $venv is missing: run scripts/setup (it installs openpi-client there)" >&2
  exit 1
fi
if [ "$(cat "$venv/.focusvla-requirements" 2>/dev/null)" != "$(sha256sum "$requirements" | cut -d' ' -f1)" ]; then
  echo "run_serve.sh: $venv is not up to date with scripts/requirements-openpi.txt: run scripts/setup" >&2
  exit 1
fi
export FOCUSVLA_TEST_DATA="${3:-${FOCUSVLA_TEST_DATA:-$build_dir/test_data}}"
export FOCUSVLA_CLI="${FOCUSVLA_CLI:-$build_dir/focusvla}"
export PYTHONDONTWRITEBYTECODE=1
cd "$build_dir"
# The tests bound every wait themselves; the outer limit only guards against the unforeseen.
# FOCUSVLA_SERVE_TESTS: the pytest node ids to run, relative to tests/python (default: all four files).
tests=()
for t in ${FOCUSVLA_SERVE_TESTS:-test_serve.py test_serve_ops.py test_serve_limits.py test_serve_stress.py}; do
  tests+=("$source_dir/tests/python/$t")
done
exec timeout -k 10 840 "$venv/bin/python" -m pytest -p no:cacheprovider -q -rs "${tests[@]}" "${@:4}"
