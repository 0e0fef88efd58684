#!/usr/bin/env python3
"""Oracle data for the io tests: files written by the reference writers (pip `safetensors`,
`torch.save`) plus the raw bytes every tensor must read back as.

    gen_io.py OUT_DIR
"""
import io
import json
import os
import pickle
import struct
import sys
import zipfile
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


# --- Malformed torch.save archives -----------------------------------------------------------
# Written by hand (zipfile + raw pickle opcodes, or pickle.Pickler for the tensor records) because
# torch.save never writes them; each is the smallest file that shows one problem.

def write_torch_zip(path, pkl, records=None, version=b"3\n"):
    """A torch.save-layout zip: archive/data.pkl, archive/data/<key>, archive/version."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
        z.writestr("archive/data.pkl", pkl)
        for key, data in (records or {}).items():
            z.writestr(f"archive/data/{key}", data)
        z.writestr("archive/version", version)


def long_binget(i):
    return b"j" + struct.pack("<I", i)


DEPTH = 200_000
PROTO = b"\x80\x02"


def deep_pickles():
    """Pickles that nest DEPTH values through each container opcode."""
    return {
        # TUPLE1 around None, DEPTH times (the fuzzer's reproducer).
        "deep_tuple1.pt": PROTO + b"N" + b"\x85" * DEPTH + b".",
        # MARK ... TUPLE: DEPTH marks, then DEPTH tuples each closing the one below.
        "deep_mark_tuple.pt": PROTO + b"(" * DEPTH + b"N" + b"t" * DEPTH + b".",
        # DEPTH empty lists, then each APPENDed into the one below (innermost first).
        "deep_list.pt": PROTO + b"]" * DEPTH + b"Na" + b"a" * (DEPTH - 1) + b".",
        # DEPTH empty dicts each followed by a key, then SETITEM from the innermost out.
        "deep_dict.pt": PROTO + b"}K\x00" * DEPTH + b"N" + b"s" * DEPTH + b".",
        # Outer-first through the memo: list i-1 is fetched back and list i appended to it.
        "deep_memo_list.pt": PROTO + b"]\x94"
        + b"".join(long_binget(i - 1) + b"]\x94a" for i in range(1, DEPTH)) + b".",
    }


def cyclic_pickles():
    """Pickles whose values refer to themselves through the memo."""
    return {
        "self_list.pt": PROTO + b"]q\x00h\x00a.",                       # l = []; l.append(l)
        "self_dict.pt": PROTO + b"}q\x00K\x00h\x00s.",                  # d = {}; d[0] = d
        # a = []; b = []; a.append(b); b.append(a)
        "cycle_lists.pt": PROTO + b"]q\x00]q\x01ah\x01h\x00a.",
        # The same cycle inside a state dict: {'w': a} where a = [b], b = [a].
        "cycle_in_state_dict.pt": PROTO + b"}(X\x01\x00\x00\x00w]q\x00]q\x01h\x00aau.",
    }


class _Storage:
    def __init__(self, key, numel):
        self.key, self.numel = key, numel


class _Tensor:
    """Pickles as torch.save writes a tensor, with arbitrary (possibly absurd) size and stride."""

    def __init__(self, storage, offset, size, stride):
        self.storage, self.offset, self.size, self.stride = storage, offset, size, stride

    def __reduce__(self):
        return (torch._utils._rebuild_tensor_v2,
                (self.storage, self.offset, tuple(self.size), tuple(self.stride), False, OrderedDict()))


class _TensorPickler(pickle.Pickler):
    def persistent_id(self, obj):
        if isinstance(obj, _Storage):
            return ("storage", torch.FloatStorage, obj.key, "cpu", obj.numel)
        return None


def tensor_view_archive(path, offset, size, stride, numel=4):
    """{'weight': a float32 view (offset, size, stride) of a `numel`-element storage}."""
    state = OrderedDict(weight=_Tensor(_Storage("0", numel), offset, size, stride))
    buf = io.BytesIO()
    _TensorPickler(buf, protocol=2).dump(state)
    write_torch_zip(path, buf.getvalue(), {"0": struct.pack(f"<{numel}f", *range(numel))})


def patch_record(path, suffix, data):
    """Overwrites the bytes of the stored record whose name ends with `suffix` (same length)."""
    with zipfile.ZipFile(path) as z:
        info = next(i for i in z.infolist() if i.filename.endswith(suffix))
    assert info.compress_type == zipfile.ZIP_STORED and info.file_size == len(data)
    raw = bytearray(open(path, "rb").read())
    name_len, extra_len = struct.unpack_from("<HH", raw, info.header_offset + 26)
    start = info.header_offset + 30 + name_len + extra_len
    raw[start:start + len(data)] = data
    open(path, "wb").write(raw)


def force_zip64_directory(path):
    """Sets the plain end-of-directory counts and offsets to their zip64 markers (as for > 65535
    records or > 4 GiB), so readers must follow the zip64 record torch.save also writes."""
    raw = bytearray(open(path, "rb").read())
    eocd = len(raw) - 22
    assert raw[eocd:eocd + 4] == b"PK\x05\x06" and raw[eocd - 20:eocd - 16] == b"PK\x06\x07"
    struct.pack_into("<HHII", raw, eocd + 8, 0xFFFF, 0xFFFF, 0xFFFFFFFF, 0xFFFFFFFF)
    open(path, "wb").write(raw)


def write_malformed_torch_files(out):
    d = os.path.join(out, "malformed_pt")
    os.makedirs(d, exist_ok=True)
    for name, pkl in {**deep_pickles(), **cyclic_pickles()}.items():
        write_torch_zip(os.path.join(d, name), pkl)
    big = 2**62
    views = {
        "view_ok.pt": (1, (3,), (1,)),                       # control: a valid view, read back exactly
        "numel_overflow.pt": (0, (big, 4), (0, 0)),          # numel 2^64
        "bytes_overflow.pt": (0, (2**61,), (0,)),            # 2^61 floats: 2^63 bytes
        "stride_overflow.pt": (0, (3,), (big,)),             # extent 2 * 2^62
        "offset_overflow.pt": (2**63 - 1, (2,), (1,)),       # offset + extent past int64
        "zero_overflow.pt": (0, (2**40, 2**40, 0), (1, 1, 1)),  # empty, but the sizes multiply past 2^64
    }
    for name, (offset, size, stride) in views.items():
        tensor_view_archive(os.path.join(d, name), offset, size, stride)
    offset, size, stride = views["view_ok.pt"]
    write_expected(os.path.join(d, "view_ok_expected"),
                   {"weight": torch.arange(4, dtype=torch.float32).as_strided(size, stride, offset)})
    empty = pickle.dumps(OrderedDict(), protocol=2)
    write_torch_zip(os.path.join(d, "version_23_digits.pt"), empty, version=b"12345678901234567890123\n")
    write_torch_zip(os.path.join(d, "version_text.pt"), empty, version=b"three\n")
    write_torch_zip(os.path.join(d, "version_unsupported.pt"), empty, version=b"11\n")
    write_torch_zip(os.path.join(d, "version_empty_ok.pt"), empty, version=b" +3 trailing")  # stoull reads 3
    # Archives torch.save wrote (zip64 end records, `<name>/version`), then patched.
    for name, zip64, version in (("torch_save_zip64.pt", True, None), ("torch_save_version_0.pt", False, b"0"),
                                 ("torch_save_zip64_version_0.pt", True, b"0")):
        path = os.path.join(d, name)
        torch.save(OrderedDict(weight=torch.arange(6, dtype=torch.float32)), path)
        if version is not None:
            with zipfile.ZipFile(path) as z:
                assert z.read(next(n for n in z.namelist() if n.endswith("/version")))[:1] == b"3"
            patch_record(path, "/version", version + b"\n")
        if zip64:
            force_zip64_directory(path)
    with zipfile.ZipFile(os.path.join(d, "no_version.pt"), "w", zipfile.ZIP_STORED) as z:
        z.writestr("archive/data.pkl", empty)
    with zipfile.ZipFile(os.path.join(d, "no_folder.pt"), "w", zipfile.ZIP_STORED) as z:
        z.writestr("data.pkl", empty)
        z.writestr("version", b"3\n")


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
    # The same archive with its records deflated (torch.save stores them; LibTorch's reader
    # inflates either): read through the reader's copy instead of the file mapping.
    with zipfile.ZipFile(os.path.join(out, "state_dict.pt")) as src, \
            zipfile.ZipFile(os.path.join(out, "state_dict_deflated.pt"), "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            dst.writestr(info.filename, src.read(info), compress_type=zipfile.ZIP_DEFLATED)
    # A module's own state_dict() (carries `_metadata`), without prefix.
    lin = torch.nn.Linear(3, 2)
    torch.save(lin.state_dict(), os.path.join(out, "linear.pt"))
    write_expected(os.path.join(out, "linear_expected"), lin.state_dict())
    # Files that are not state dicts.
    torch.save([torch.ones(2)], os.path.join(out, "list.pt"))
    torch.save({"weight": torch.ones(2), "step": 3}, os.path.join(out, "mixed.pt"))
    torch.save({"weight": torch.ones(2)}, os.path.join(out, "legacy.pt"), _use_new_zipfile_serialization=False)
    write_malformed_torch_files(out)

    # A tiny checkpoint directory in the release layout, with its expected inspection.
    expected = make_checkpoint.write_directory(os.path.join(out, "checkpoint_tiny"), size="tiny", dtype="bf16",
                                               shards=2, head="focus", module_prefix=True)
    with open(os.path.join(out, "checkpoint_tiny.json"), "w") as f:
        json.dump(expected, f, indent=1)
    print(f"io test data written to {out}")


if __name__ == "__main__":
    main()
