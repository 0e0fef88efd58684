"""The Ray app's arguments (a Serve config file's `args`), checked."""
from typing import Any, Dict, Tuple

import ray

# ------------------------------------------------------------------------------------------------
# Options (the application's `args` in a Serve config file)


class PolicyOptions:
    """The arguments of build_app, checked; unknown names are an error listing the known ones."""

    # name: (default, type or None for "any of the listed")
    FIELDS: Dict[str, Tuple[Any, Any]] = {
        # the policy (focusvla.Policy.load; as `focusvla serve`'s options)
        "checkpoint": (None, str),
        "unnorm_key": (None, str),
        "device": ("auto", str),          # auto | cpu | cuda | cuda:N
        "dtype": (None, str),             # None: the checkpoint's where native, float32 elsewhere
        "prompt_format": ("auto", str),
        "center_crop": (True, bool),
        "jpeg_roundtrip": (True, bool),   # TF's JPEG round trip before the LIBERO resize (non-224 cameras)
        "quantize": ("none", str),        # none | int8 (CPU W8A8, CUDA weight-only) | fp8 (CUDA 8.9+)
        "threads": (0, int),              # CPU intra-op threads per replica (0: LibTorch's default)
        "cuda_graphs": (True, bool),
        "batch_buckets": (None, list),    # None: 1, 2, 4, 8 on CUDA with graphs, none on the CPU
        "warmup_instructions": (None, list),  # run every bucket with each before serving (focusvla serve --warmup)
        # batching (per policy replica)
        "max_batch": (8, int),
        "max_wait_ms": (2.0, float),
        # the protocol (as focusvla serve's --image-key, --state-key, --prompt-key, --max-frame-mb)
        "image_keys": (None, list),
        "state_key": ("observation/state", str),
        "prompt_key": ("prompt", str),
        "max_frame_mb": (8.0, float),
        "max_image_side": (4096, int),
        "max_prompt_bytes": (4096, int),
        "api_key": (None, str),          # None: $FOCUSVLA_API_KEY of the ingress replica, else none
        # the ingress's calls to the policy replicas
        "request_timeout_s": (60.0, float),
        "retries": (1, int),              # a request whose replica died is sent again this often
    }

    def __init__(self, **kwargs):
        unknown = sorted(set(kwargs) - set(self.FIELDS))
        if unknown:
            raise ValueError(f"focusvla.ray_serve: unknown argument(s) {', '.join(unknown)}; known: "
                             f"{', '.join(self.FIELDS)}")
        for name, (default, kind) in self.FIELDS.items():
            value = kwargs.get(name, default)
            if value is not None:
                if kind is float and isinstance(value, int) and not isinstance(value, bool):
                    value = float(value)
                if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
                    raise ValueError(f"focusvla.ray_serve: {name} must be {kind.__name__}, got {value!r}")
            setattr(self, name, value)
        if not self.checkpoint:
            raise ValueError("focusvla.ray_serve: checkpoint is required (the checkpoint directory, on every node "
                             "that runs a policy replica)")
        # The policy options' spellings are the library's own (focusvla.canonical_option: the CLI, the
        # C ABI and Policy.load accept the same); checked here, on the ingress, for spelling only.
        from .._core import Error, canonical_option
        try:
            self.device = canonical_option("device", self.device, "focusvla.ray_serve: device")
            if self.dtype is not None:
                self.dtype = canonical_option("dtype", self.dtype, "focusvla.ray_serve: dtype")
            self.prompt_format = canonical_option("prompt_format", self.prompt_format,
                                                  "focusvla.ray_serve: prompt_format")
            self.quantize = canonical_option("quantize", self.quantize, "focusvla.ray_serve: quantize")
        except Error as e:
            raise ValueError(str(e)) from None
        if not 1 <= self.max_batch <= 1024:
            raise ValueError(f"focusvla.ray_serve: max_batch {self.max_batch} is not in 1 .. 1024")
        if not 0 <= self.max_wait_ms <= 60000:
            raise ValueError(f"focusvla.ray_serve: max_wait_ms {self.max_wait_ms} is not in 0 .. 60000")
        if not 1 <= self.max_prompt_bytes <= (1 << 20):
            raise ValueError(f"focusvla.ray_serve: max_prompt_bytes {self.max_prompt_bytes} is not in 1 .. 1048576")
        if self.max_frame_mb * (1 << 20) < 1024:
            raise ValueError("focusvla.ray_serve: max_frame_mb below 1 KiB")
        if self.request_timeout_s <= 0 or self.retries < 0 or self.threads < 0:
            raise ValueError("focusvla.ray_serve: request_timeout_s must be positive, retries and threads >= 0")
        if self.image_keys is not None and (not self.image_keys or
                                            not all(isinstance(k, str) and k for k in self.image_keys)):
            raise ValueError("focusvla.ray_serve: image_keys must be a non-empty list of non-empty keys")
        if self.batch_buckets is not None and not all(
                isinstance(b, int) and not isinstance(b, bool) and 1 <= b <= 1024 for b in self.batch_buckets):
            raise ValueError(f"focusvla.ray_serve: batch_buckets must be batch sizes in 1 .. 1024, got "
                             f"{self.batch_buckets!r}")
        if self.warmup_instructions is not None and not all(
                isinstance(w, str) and w.strip() for w in self.warmup_instructions):
            raise ValueError("focusvla.ray_serve: warmup_instructions must be non-empty instructions")

    def as_dict(self) -> Dict[str, Any]:
        return {name: getattr(self, name) for name in self.FIELDS}

    @property
    def max_frame_bytes(self) -> int:
        return int(self.max_frame_mb * (1 << 20))

    def wants_gpu(self) -> bool:
        if self.device.startswith("cuda"):
            return True
        if self.device == "auto":
            try:
                return ray.is_initialized() and ray.cluster_resources().get("GPU", 0) > 0
            except Exception:  # noqa: BLE001
                return False
        return False
