"""openpi's wire format for the Ray app: packing as openpi_client.msgpack_numpy does, and requests
decoded by `focusvla serve`'s own decoder (through the native module)."""
from typing import Any, Dict, List, Optional, Sequence

import msgpack
import numpy as np

LIBERO_IMAGE_KEYS = ("observation/image", "observation/wrist_image")  # focusvla serve's defaults

# ------------------------------------------------------------------------------------------------
# openpi's wire format (openpi_client.msgpack_numpy, without depending on openpi-client)


def _pack_array(obj):
    """openpi_client.msgpack_numpy.pack_array: numpy arrays and scalars as msgpack maps."""
    if isinstance(obj, (np.ndarray, np.generic)) and obj.dtype.kind in ("V", "O", "c"):
        raise ValueError(f"Unsupported dtype: {obj.dtype}")
    if isinstance(obj, np.ndarray):
        return {b"__ndarray__": True, b"data": obj.tobytes(), b"dtype": obj.dtype.str, b"shape": obj.shape}
    if isinstance(obj, np.generic):
        return {b"__npgeneric__": True, b"data": obj.item(), b"dtype": obj.dtype.str}
    return obj


def _unpack_array(obj):
    """openpi_client.msgpack_numpy.unpack_array."""
    if b"__ndarray__" in obj:
        return np.ndarray(buffer=obj[b"data"], dtype=np.dtype(obj[b"dtype"]), shape=obj[b"shape"])
    if b"__npgeneric__" in obj:
        return np.dtype(obj[b"dtype"]).type(obj[b"data"])
    return obj


def packb(obj) -> bytes:
    """Byte-identical to openpi_client.msgpack_numpy.packb."""
    return msgpack.packb(obj, default=_pack_array)


def unpackb(data: bytes):
    """openpi_client.msgpack_numpy.unpackb (for clients and tests; the server decodes with
    decode_request, which validates)."""
    return msgpack.unpackb(data, object_hook=_unpack_array)


# ------------------------------------------------------------------------------------------------
# Requests: focusvla serve's own decoder (src/serve/msgpack_numpy.cpp, through the native module), so
# both front ends accept the same requests and answer the same errors.

from .._core import RequestError  # noqa: E402  (a ValueError: the message names the key and the problem)


def decode_request(data: bytes, image_keys: Sequence[str], state_key: Optional[str], prompt_key: str,
                   proprio_dim: int, max_image_side: int = 4096, max_prompt_bytes: int = 4096) -> Dict[str, Any]:
    """One request frame -> {"images": [uint8 (H, W, 3)], "instruction": str, "proprio": float64 or
    None} (focusvla.Policy.act_batch's observation). Raises RequestError with focusvla serve's
    message for the first problem found."""
    from .._core import decode_request as _decode
    return _decode(bytes(data), list(image_keys), state_key, prompt_key, proprio_dim, max_image_side,
                   max_prompt_bytes)


def encode_reply(actions: np.ndarray, server_timing: Dict[str, float], replica: Optional[str] = None) -> bytes:
    """{"actions": float64 (chunk, action_dim), "server_timing": {name: float}[, "replica": id]}, as
    openpi's packb writes it (every timing value a float64, as focusvla serve writes them)."""
    reply: Dict[str, Any] = {"actions": np.ascontiguousarray(actions, dtype=np.float64),
                             "server_timing": {k: float(v) for k, v in server_timing.items()}}
    if replica is not None:
        reply["replica"] = replica
    return packb(reply)


def resolve_image_keys(cameras: int, image_keys: Optional[List[str]]) -> List[str]:
    """The request key of each camera: image_keys, else focusvla serve's defaults (LIBERO's). cameras
    is the policy's num_images; 0 (a config.json without num_images_in_input, as the released
    VLA-Adapter checkpoints) takes any count, so the keys fix it (default: LIBERO's two)."""
    if cameras == 0:
        return list(image_keys) if image_keys else list(LIBERO_IMAGE_KEYS)
    keys = list(image_keys) if image_keys else list(LIBERO_IMAGE_KEYS[:cameras])
    if len(keys) != cameras:
        raise RuntimeError(f"image keys: {len(keys)} for a policy with {cameras} camera(s): name one "
                           "per camera in image_keys, in the checkpoint's order")
    return keys
