#!/usr/bin/env bash
# Peak memory and time of loading a 1 GiB safetensors file (bf16, 64 tensors of 16 MiB, written
# by pip safetensors) into a module, one fresh process per case.
#   benchmarks/bench_load.sh [BUILD_DIR]
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="${1:-$root/build}"
file="$build/bench_load_1g.safetensors"
if [ ! -f "$file" ]; then
  "$root/.venv/bin/python" - "$file" <<'PY'
import sys, torch
from safetensors.torch import save_file
g = torch.Generator().manual_seed(0)
save_file({f"layers.{i}.weight": torch.randn(4096, 2048, generator=g).to(torch.bfloat16) for i in range(64)}, sys.argv[1])
PY
fi
cmake --build "$build" --target focusvla_bench_load >/dev/null
for case in BM_LoadIntoModule BM_LoadIntoModuleKeepPages; do
  sync; echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || true
  "$build/benchmarks/focusvla_bench_load" "$file" --benchmark_filter="^$case/"
done
