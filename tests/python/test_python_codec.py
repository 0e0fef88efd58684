"""focusvla._core.decode_request (the Ray app's request decoder) is `focusvla serve`'s own: on every
request of the server's test data (tests/python/gen_serve.py: frames packed by openpi's own
msgpack_numpy, valid and malformed) it gives the same observation, or a RequestError (a
ValueError) with the same named problem."""

import json
import os
from pathlib import Path

import numpy as np
import pytest

import focusvla
from focusvla import _core

SERVE = Path(os.environ.get("FOCUSVLA_TEST_DATA", "build/test_data")) / "serve"
KEYS = ["observation/image", "observation/wrist_image"]


def cases():
    return json.loads((SERVE / "cases.json").read_text())


def decode(name, **limits):
    frame = (SERVE / "requests" / f"{name}.msgpack").read_bytes()
    return _core.decode_request(frame, KEYS, "observation/state", "prompt", 8, **limits)


@pytest.mark.parametrize("case", [c for c in cases() if c["valid"]], ids=lambda c: c["name"])
def test_valid_requests_decode_exactly(case):
    obs = decode(case["name"])
    assert len(obs["images"]) == len(case["image_shapes"])
    for i, (image, shape) in enumerate(zip(obs["images"], case["image_shapes"])):
        assert image.dtype == np.uint8 and list(image.shape) == shape
        want = (SERVE / "requests" / f"{case['name']}.image{i}.bin").read_bytes()
        assert image.tobytes() == want, f"image {i}"
    assert obs["proprio"].dtype == np.float64 and obs["proprio"].tolist() == case["state"]  # exact
    assert obs["instruction"] == case["prompt"]


@pytest.mark.parametrize("case", [c for c in cases() if not c["valid"]], ids=lambda c: c["name"])
def test_malformed_requests_name_key_and_problem(case):
    with pytest.raises(_core.RequestError) as raised:
        decode(case["name"])
    assert isinstance(raised.value, ValueError) and not isinstance(raised.value, focusvla.Error)
    for fragment in case["fragments"]:
        assert fragment in str(raised.value), (str(raised.value), fragment)


def test_limits_and_no_state():
    with pytest.raises(_core.RequestError, match="over the limit of 10"):
        decode("libero_float64_state", max_prompt_bytes=10)
    with pytest.raises(_core.RequestError, match="224 x 224"):
        decode("libero_float64_state", max_image_side=100)
    frame = (SERVE / "requests" / "missing_state.msgpack").read_bytes()
    obs = _core.decode_request(frame, KEYS[:1], None, "prompt", 0)
    assert obs["proprio"] is None and len(obs["images"]) == 1
