#!/usr/bin/env python3
"""Oracle data for the io tests: files written by the reference writers (pip `safetensors`,
`torch.save`) plus the raw bytes every tensor must read back as.

    gen_io.py OUT_DIR
"""
import json
import os
import sys
from collections import OrderedDict

import torch
from safetensors.torch import save_file

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "scripts"))
import make_checkpoint  # noqa: E402

DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
    "BOOL": torch.bool, "U16": torch.uint16, "U32": torch.uint32, "U64": torch.uint64,
    "F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2,
}


def random_tensor(gen, dtype, shape):
    if dtype == torch.bool:
        return torch.rand(shape, generator=gen) > 0.5
    if dtype.is_floating_point:
        return (torch.randn(shape, generator=gen) * 3).to(dtype)
    info = torch.iinfo(dtype)
    lo, hi = max(info.min, -(2**31)), min(info.max, 2**31 - 1)
    return torch.randint(lo, hi, shape, generator=gen, dtype=torch.int64).to(dtype)


def write_expected(out_dir, tensors):
    """manifest.json + one .bin of raw little-endian bytes per tensor."""
    os.makedirs(out_dir, exist_ok=True)
    manifest = {}
    for i, (name, t) in enumerate(tensors.items()):
        file = f"t{i}.bin"
        data = t.contiguous().view(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b""
        with open(os.path.join(out_dir, file), "wb") as f:
            f.write(data)
        dtype = next(k for k, v in DTYPES.items() if v == t.dtype)
        manifest[name] = {"dtype": dtype, "shape": list(t.shape), "file": file}
    with open(os.path.join(out_dir, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1)


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    gen = torch.Generator().manual_seed(1234)

    # Every dtype, with odd shapes, a scalar and an empty tensor.
    shapes = [(3, 5), (7,), (2, 3, 4), (1, 1, 9), (13,)]
    tensors = OrderedDict()
    for i, (name, dtype) in enumerate(DTYPES.items()):
        tensors[f"layer.{i}.{name.lower()}"] = random_tensor(gen, dtype, shapes[i % len(shapes)])
    tensors["scalar"] = torch.tensor(2.5, dtype=torch.float32)
    tensors["empty"] = torch.zeros((0, 4), dtype=torch.float32)
    save_file(dict(tensors), os.path.join(out, "dtypes.safetensors"), metadata={"format": "pt", "note": "focusvla"})
    write_expected(os.path.join(out, "dtypes"), tensors)

    # Sharded: three shards and an index, as transformers writes them.
    sharded = OrderedDict((f"block.{i}.weight", random_tensor(gen, torch.bfloat16, (4, 6))) for i in range(7))
    sdir = os.path.join(out, "sharded")
    os.makedirs(sdir, exist_ok=True)
    names = list(sharded)
    weight_map = {}
    for k, part in enumerate((names[:3], names[3:5], names[5:])):
        file = f"model-{k + 1:05d}-of-00003.safetensors"
        save_file({n: sharded[n] for n in part}, os.path.join(sdir, file))
        weight_map.update({n: file for n in part})
    with open(os.path.join(sdir, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": 7 * 48}, "weight_map": weight_map}, f)
    write_expected(os.path.join(out, "sharded_expected"), sharded)

    # torch.save state dicts: with the DDP `module.` prefix, mixed dtypes, a non-contiguous view.
    state = OrderedDict()
    state["module.model.fc1.weight"] = random_tensor(gen, torch.float32, (5, 3))
    state["module.model.fc1.bias"] = random_tensor(gen, torch.bfloat16, (5,))
    state["module.model.count"] = random_tensor(gen, torch.int64, (2,))
    base = random_tensor(gen, torch.float32, (4, 6))
    state["module.model.view"] = base.t()
    torch.save(state, os.path.join(out, "state_dict.pt"))
    write_expected(os.path.join(out, "state_dict_expected"),
                   OrderedDict((k[len("module."):], v) for k, v in state.items()))
    # A module's own state_dict() (carries `_metadata`), without prefix.
    lin = torch.nn.Linear(3, 2)
    torch.save(lin.state_dict(), os.path.join(out, "linear.pt"))
    write_expected(os.path.join(out, "linear_expected"), lin.state_dict())
    # Files that are not state dicts.
    torch.save([torch.ones(2)], os.path.join(out, "list.pt"))
    torch.save({"weight": torch.ones(2), "step": 3}, os.path.join(out, "mixed.pt"))
    torch.save({"weight": torch.ones(2)}, os.path.join(out, "legacy.pt"), _use_new_zipfile_serialization=False)

    # A tiny checkpoint directory in the release layout, with its expected inspection.
    expected = make_checkpoint.write_directory(os.path.join(out, "checkpoint_tiny"), size="tiny", dtype="bf16",
                                               shards=2, head="focus", module_prefix=True)
    with open(os.path.join(out, "checkpoint_tiny.json"), "w") as f:
        json.dump(expected, f, indent=1)
    print(f"io test data written to {out}")


if __name__ == "__main__":
    main()
