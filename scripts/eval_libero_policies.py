"""The two policies of scripts/eval_libero.py, each act(images, task, state) -> (8, 7) un-normalized
actions: focusvla's Python package, and the Python reference of one act
(tests/python/reference_policy.py) fed by the reference's TensorFlow resize in a worker process."""
import glob
import json
import os
import shutil
import sys
import tempfile

import numpy as np

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
PROMPT_FORMATS = {"qwen": "qwen-chat", "llama": "openvla"}


class UsageError(Exception):
    """A user mistake: printed as one line, exit status 2."""


def fail(msg):
    raise UsageError(msg)



class FocusVLA:
    name = "focusvla"

    def __init__(self, args, unnorm_key):
        try:
            import focusvla
        except ImportError as e:
            fail(f"focusvla's Python package is not importable here ({e}): scripts/eval_libero installs the wheel "
                 "from build/python-wheel (or FOCUSVLA_WHEEL); build it with "
                 "`.venv/bin/python -m pip wheel . --no-deps --no-build-isolation -w build/python-wheel`")
        dtype = None if args.dtype == "auto" else args.dtype
        try:
            self.policy = focusvla.Policy.load(args.checkpoint, device="cpu", dtype=dtype, unnorm_key=unnorm_key,
                                               threads=args.threads, quantize=args.quantize)
        except focusvla.Error as e:
            fail(f"focusvla could not load {args.checkpoint}: {e}")
        s = self.policy.settings
        self.dtype = str(s.get("dtype"))
        self.describe = {k: s.get(k) for k in ("head", "dtype", "dtype_source", "matmul", "prompt_format",
                                                 "center_crop", "jpeg_roundtrip", "unnorm_key", "quantize",
                                                 "quantize_detail") if k in s}
        self.describe["quantize"] = args.quantize

    def act(self, images, task, state):
        return self.policy.act(images, task, state)


def _resize_worker(conn, tests_dir):
    """The reference's resize_image_for_policy (TensorFlow: JPEG encode / decode, Lanczos-3 to 224)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.path.insert(0, tests_dir)
    try:
        from gen_vision import resize_image_for_policy
        resize_image_for_policy(np.zeros((256, 256, 3), np.uint8))
        conn.send("ready")
    except Exception as e:  # noqa: BLE001 - reported by the parent
        conn.send(f"error: {type(e).__name__}: {e}")
        return
    while True:
        images = conn.recv()
        if images is None:
            return
        conn.send([resize_image_for_policy(im, 224, True) for im in images])


class TFResizer:
    def __init__(self):
        import multiprocessing
        ctx = multiprocessing.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_resize_worker, args=(child, os.path.join(ROOT, "tests", "python")),
                                daemon=True)
        self.proc.start()
        msg = self.conn.recv() if self.conn.poll(300) else "error: no answer in 300 s"
        if msg != "ready":
            fail(f"the reference's TensorFlow resize could not start ({msg}): TensorFlow comes from .venv "
                 "(scripts/setup)")

    def __call__(self, images):
        self.conn.send(images)
        return self.conn.recv()

    def close(self):
        try:
            self.conn.send(None)
            self.proc.join(10)
        except (OSError, EOFError):
            pass


class Reference:
    name = "reference"

    def __init__(self, args, unnorm_key, dtype_name, resizer):
        self.resizer = resizer
        try:
            import torch
            sys.path.insert(0, os.path.join(ROOT, "tests", "python"))
            from reference_policy import ReferencePolicy
        except ImportError as e:
            fail(f"the Python reference needs torch, timm, transformers and tensorflow from .venv ({e}): "
                 "run scripts/setup, then scripts/setup_sim")
        self.torch = torch
        dtype = {"bf16": torch.bfloat16, "f32": torch.float32}[dtype_name]
        # ReferencePolicy copies the tokenizer files into <checkpoint>/.tokenizer: give it a directory of
        # links so the checkpoint itself is never written.
        self.shadow = tempfile.mkdtemp(prefix="eval_libero_ref_")
        for path in glob.glob(os.path.join(os.path.abspath(args.checkpoint), "*")):
            os.symlink(path, os.path.join(self.shadow, os.path.basename(path)))
        self.policy = ReferencePolicy(self.shadow, size="full" if self._full() else "tiny", dtype=dtype)
        llm_id = json.load(open(os.path.join(args.checkpoint, "config.json"))).get("llm_backbone_id", "")
        self.prompt_format = "qwen-chat" if "qwen" in llm_id else "openvla"
        self.unnorm_key = unnorm_key
        self.dtype = dtype_name
        self.describe = {"dtype": dtype_name, "prompt_format": self.prompt_format, "center_crop": True,
                         "jpeg_roundtrip": True, "unnorm_key": unnorm_key,
                         "implementation": "tests/python/reference_policy.py (timm + transformers + the reference "
                                           "heads; get_vla_action transcribed)"}

    def _full(self):
        cfg = json.load(open(os.path.join(self.shadow, "config.json")))
        return cfg.get("text_config", {}).get("hidden_size", 0) >= 896

    def act(self, images, task, state):
        # prepare_images_for_vla: resize_image_for_policy (the TensorFlow worker), then the 0.9 center crop.
        images = self.resizer(images)
        out = self.policy.act(images, task, state, prompt_format=self.prompt_format, unnorm_key=self.unnorm_key,
                              center_crop=True)
        return out["actions"]

    def close(self):
        shutil.rmtree(self.shadow, ignore_errors=True)
        self.resizer.close()
