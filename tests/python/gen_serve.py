#!/usr/bin/env python3
"""Oracle data for tests/serve/test_msgpack_numpy.cpp, written with openpi's own packer
(openpi_client.msgpack_numpy, from PyPI) in the openpi-client environment (.venv-openpi):

  requests/<name>.msgpack  request frames as openpi's WebsocketClientPolicy sends them (and
                           malformed ones), with cases.json saying what each must decode to:
                           the images (raw bytes in <name>.image<i>.bin), the state, the prompt;
                           or the fragments its error must name.
  reply.msgpack            openpi's packb of a reply {"actions": float64 (8, 7), "server_timing"}
  metadata.msgpack         openpi's packb of a metadata map (sorted keys, as nlohmann orders them)
  replies.json             the values both were packed from

    gen_serve.py OUT_DIR
"""
import json
import math
import os
import sys

import msgpack
import numpy as np
from openpi_client import msgpack_numpy


def ndarray_map(data: bytes, dtype: str, shape):
    """A numpy-array map as pack_array writes it, with any (possibly inconsistent) fields."""
    return {b"__ndarray__": True, b"data": data, b"dtype": dtype, b"shape": list(shape)}


def main(out):
    os.makedirs(os.path.join(out, "requests"), exist_ok=True)
    rng = np.random.default_rng(20261130)
    cases = []

    def image(h=224, w=224):
        return rng.integers(0, 256, (h, w, 3), dtype=np.uint8)

    def libero(**over):
        obs = {"observation/image": image(), "observation/wrist_image": image(),
               "observation/state": rng.standard_normal(8), "prompt": "put the bowl on the plate"}
        obs.update(over)
        return obs

    def write(name, frame: bytes):
        with open(os.path.join(out, "requests", name + ".msgpack"), "wb") as f:
            f.write(frame)

    def valid(name, obs, images, state, prompt, frame=None):
        write(name, frame if frame is not None else msgpack_numpy.packb(obs))
        for i, im in enumerate(images):
            with open(os.path.join(out, "requests", f"{name}.image{i}.bin"), "wb") as f:
                f.write(np.ascontiguousarray(im).tobytes())
        cases.append({"name": name, "valid": True, "image_shapes": [list(im.shape) for im in images],
                      "state": [float(v) for v in state], "prompt": prompt})

    def invalid(name, frame: bytes, *fragments):
        write(name, frame)
        cases.append({"name": name, "valid": False, "fragments": list(fragments)})

    # --- valid requests ---------------------------------------------------------------------
    o = libero()
    valid("libero_float64_state", o, [o["observation/image"], o["observation/wrist_image"]],
          o["observation/state"], o["prompt"])
    o = libero(**{"observation/state": rng.standard_normal(8).astype(np.float32)})
    valid("libero_float32_state", o, [o["observation/image"], o["observation/wrist_image"]],
          o["observation/state"].astype(np.float64), o["prompt"])
    im, wr, st = image(480, 640), image(128, 96), rng.standard_normal(8)
    nested = {"observation": {"image": im, "wrist_image": wr, "state": st}, "prompt": "open the drawer"}
    valid("nested_maps_any_image_size", nested, [im, wr], st, "open the drawer")
    o = libero(extra_int=3, extra_none=None, extra_list=[1, [2, [3]]], extra_bytes=b"\x00\x01",
               extra_array=np.zeros((2, 3), np.float32), extra_bool=True, extra_scalar=np.float32(1.5))
    valid("unknown_keys_ignored", o, [o["observation/image"], o["observation/wrist_image"]],
          o["observation/state"], o["prompt"])
    state_list = [0.25, -1, 3, 1e-3, -2.5, 0, 7, -0.125]
    o = libero(**{"observation/state": state_list})
    valid("state_as_list", o, [o["observation/image"], o["observation/wrist_image"]], state_list, o["prompt"])
    o = libero(prompt=np.str_("pick up the black bowl"))
    valid("prompt_numpy_str", o, [o["observation/image"], o["observation/wrist_image"]],
          o["observation/state"], "pick up the black bowl")
    o = libero(prompt="stack the cups \u2014 caf\u00e9 \u4e2d\u6587")
    valid("prompt_utf8", o, [o["observation/image"], o["observation/wrist_image"]], o["observation/state"],
          o["prompt"])
    o = libero(**{"observation/state": np.arange(8, dtype=np.int64)})
    valid("state_int64", o, [o["observation/image"], o["observation/wrist_image"]], np.arange(8.0), o["prompt"])

    # --- invalid requests -------------------------------------------------------------------
    good = msgpack_numpy.packb(libero())
    invalid("garbage", b"\xc1garbage", "request", "invalid msgpack")
    invalid("truncated", good[: len(good) // 2], "request", "truncated")
    invalid("trailing_bytes", good + b"\x00", "request", "1 bytes after")
    invalid("empty_frame", b"", "request", "truncated")
    invalid("top_level_list", msgpack_numpy.packb([1, 2, 3]), "request", "expected a map", "a list")
    invalid("top_level_ndarray", msgpack_numpy.packb(image()), "request", "expected a map", "numpy array")
    o = libero()
    del o["prompt"]
    invalid("missing_prompt", msgpack_numpy.packb(o), "prompt", "missing")
    o = libero()
    del o["observation/wrist_image"]
    invalid("missing_wrist_image", msgpack_numpy.packb(o), "observation/wrist_image", "missing")
    o = libero()
    del o["observation/state"]
    invalid("missing_state", msgpack_numpy.packb(o), "observation/state", "missing")
    invalid("prompt_int", msgpack_numpy.packb(libero(prompt=42)), "prompt", "string", "an integer")
    invalid("prompt_empty", msgpack_numpy.packb(libero(prompt=" \n")), "prompt", "empty")
    invalid("prompt_bytes", msgpack_numpy.packb(libero(prompt=b"pick")), "prompt", "string", "bytes")
    # A str whose bytes are not UTF-8 (byte 0xff at offset 5), as a non-Python client can send.
    invalid("prompt_not_utf8", msgpack.packb(libero(prompt="pick \udcff up"), default=msgpack_numpy.pack_array,
                                             unicode_errors="surrogateescape"),
            "prompt", "not valid UTF-8", "byte offset 5")
    invalid("prompt_over_limit", msgpack_numpy.packb(libero(prompt="x" * 4097)), "prompt", "4097 bytes",
            "limit of 4096")
    invalid("image_float32", msgpack_numpy.packb(libero(**{"observation/image": image().astype(np.float32)})),
            "observation/image", "uint8 (H, W, 3)", "float32 (224, 224, 3)")
    invalid("image_rgba", msgpack_numpy.packb(libero(**{"observation/image": np.zeros((224, 224, 4), np.uint8)})),
            "observation/image", "uint8 (224, 224, 4)")
    invalid("image_gray", msgpack_numpy.packb(libero(**{"observation/wrist_image": np.zeros((224, 224), np.uint8)})),
            "observation/wrist_image", "uint8 (224, 224)")
    invalid("image_chw", msgpack_numpy.packb(libero(**{"observation/image": np.zeros((3, 224, 224), np.uint8)})),
            "observation/image", "uint8 (3, 224, 224)")
    invalid("image_list", msgpack_numpy.packb(libero(**{"observation/image": [[1, 2, 3]]})),
            "observation/image", "got a list")
    invalid("image_empty", msgpack_numpy.packb(libero(**{"observation/image": np.zeros((0, 224, 3), np.uint8)})),
            "observation/image", "0 x 224")
    invalid("image_too_large", msgpack_numpy.packb(libero(**{"observation/image": np.zeros((5000, 2, 3), np.uint8)})),
            "observation/image", "5000 x 2", "per side")
    short = ndarray_map(b"\x00" * 100, "|u1", (224, 224, 3))
    invalid("image_data_short", msgpack_numpy.packb(libero(**{"observation/image": short})),
            "observation/image", "150528 bytes", "holds 100")
    huge = ndarray_map(b"\x00" * 12, "|u1", (2 ** 31, 2 ** 31, 3))
    invalid("image_shape_overflow", msgpack_numpy.packb(libero(**{"observation/image": huge})),
            "observation/image", "shape too large")
    negative = ndarray_map(b"", "|u1", (-1, 224, 3))
    invalid("image_shape_negative", msgpack_numpy.packb(libero(**{"observation/image": negative})),
            "observation/image", "not a dimension")
    bad_dtype = ndarray_map(b"\x00" * 12, "uint8", (2, 2, 3))
    invalid("image_dtype_unknown", msgpack_numpy.packb(libero(**{"observation/image": bad_dtype})),
            "observation/image", "unknown numpy dtype 'uint8'")
    missing_field = {b"__ndarray__": True, b"data": b"\x00" * 12, b"dtype": "|u1"}
    invalid("image_no_shape", msgpack_numpy.packb(libero(**{"observation/image": missing_field})),
            "observation/image", "malformed numpy array")
    invalid("state_short", msgpack_numpy.packb(libero(**{"observation/state": np.zeros(7)})),
            "observation/state", "8 numbers", "float64 (7,)")
    invalid("state_2d", msgpack_numpy.packb(libero(**{"observation/state": np.zeros((1, 8))})),
            "observation/state", "float64 (1, 8)")
    nan_state = np.zeros(8)
    nan_state[3] = math.nan
    invalid("state_nan", msgpack_numpy.packb(libero(**{"observation/state": nan_state})),
            "observation/state[3]", "NaN")
    inf_state = np.zeros(8, np.float32)
    inf_state[7] = np.inf
    invalid("state_inf", msgpack_numpy.packb(libero(**{"observation/state": inf_state})),
            "observation/state[7]", "infinite")
    invalid("state_string", msgpack_numpy.packb(libero(**{"observation/state": "0,0,0"})),
            "observation/state", "got a string")
    invalid("state_big_endian", msgpack_numpy.packb(libero(**{"observation/state": np.zeros(8, ">f8")})),
            "observation/state", "'>f8'")
    invalid("state_list_with_string",
            msgpack_numpy.packb(libero(**{"observation/state": [0.0, 1.0, 2.0, "x", 4.0, 5.0, 6.0, 7.0]})),
            "observation/state[3]", "expected a number", "a string")
    deep = 0
    for _ in range(100):
        deep = [deep]
    invalid("nesting_too_deep", msgpack_numpy.packb(libero(extra=deep)), "request", "limits")
    invalid("map_too_large", msgpack_numpy.packb(libero(extra={str(i): i for i in range(10000)})),
            "request", "limits")
    # A str32 header claiming 4 GiB: msgpack must not allocate or read past the frame.
    invalid("string_length_lie", b"\x81\xa6prompt\xdb\xff\xff\xff\xf0abc", "request")

    with open(os.path.join(out, "cases.json"), "w") as f:
        json.dump(cases, f, indent=1)

    # --- replies and metadata, packed by openpi ---------------------------------------------
    actions = rng.standard_normal((8, 7))
    timing = {"infer_ms": 12.5, "queue_ms": 0.25, "decode_ms": 0.0625, "batch_size": 3.0,
              "preprocess_ms": 1.0, "vision_ms": float("nan"), "prev_total_ms": 20.125}
    with open(os.path.join(out, "reply.msgpack"), "wb") as f:
        f.write(msgpack_numpy.packb({"actions": actions, "server_timing": timing}))
    metadata = {"action_dim": 7, "chunk": 8, "head": "focusvla", "image_keys": ["observation/image"],
                "max_wait_ms": 2.5, "negative": -3, "settings": {"center_crop": True, "dtype": "float32"},
                "state_key": None, "big": 2 ** 40}
    metadata = dict(sorted(metadata.items()))
    with open(os.path.join(out, "metadata.msgpack"), "wb") as f:
        f.write(msgpack.packb(metadata))
    with open(os.path.join(out, "replies.json"), "w") as f:
        # NaN as null (JSON has no NaN).
        json.dump({"actions": actions.tolist(),
                   "timing": [[k, None if math.isnan(v) else v] for k, v in timing.items()],
                   "metadata": metadata}, f)
    print(f"gen_serve: {len(cases)} request cases, reply and metadata frames in {out}")


if __name__ == "__main__":
    main(sys.argv[1])
