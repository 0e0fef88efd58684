"""What the server tests share (tests/python/test_serve.py for `focusvla serve`, in .venv-openpi;
tests/python/test_ray_serve.py for the Ray Serve application, in build/ray-venv): the LIBERO
tasks and image keys, observations the tiny test policies tell apart, the `focusvla act` oracle.
numpy, Pillow and the standard library only (both environments have them)."""
import ctypes
import json
import signal
import subprocess

import numpy as np
from PIL import Image

UNNORM = "libero_spatial_no_noops"
IMAGE_KEYS = ["observation/image", "observation/wrist_image"]
# Tasks of LIBERO-Spatial and LIBERO-Object, as openpi's LIBERO example sends them (task.language).
TASKS = [
    "pick up the black bowl between the plate and the ramekin and place it on the plate",
    "pick up the black bowl next to the ramekin and place it on the plate",
    "pick up the black bowl from table center and place it on the plate",
    "pick up the black bowl on the cookie box and place it on the plate",
    "pick up the black bowl in the top drawer of the wooden cabinet and place it on the plate",
    "pick up the black bowl on the ramekin and place it on the plate",
    "pick up the black bowl next to the cookie box and place it on the plate",
    "pick up the black bowl on the stove and place it on the plate",
    "pick up the black bowl next to the plate and place it on the plate",
    "pick up the black bowl on the wooden cabinet and place it on the plate",
    "pick up the alphabet soup and place it in the basket",
    "pick up the cream cheese and place it in the basket",
    "pick up the salad dressing and place it in the basket",
    "pick up the bbq sauce and place it in the basket",
    "pick up the ketchup and place it in the basket",
    "pick up the tomato sauce and place it in the basket",
]


def die_with_parent():
    """preexec_fn: a server must not outlive the test process, even a killed one (PR_SET_PDEATHSIG)."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)
    except OSError:
        pass


def smooth_image(rng, h, w, level):
    """Random 8 x 8 colour blocks around a brightness level (uint8 H x W x 3). The tiny test policies
    barely react to pixel noise but do to overall brightness, so distinct levels give distinct actions."""
    blocks = rng.integers(-8, 9, (8, 8, 3)) + int(level)
    big = np.kron(blocks, np.ones((-(-h // 8), -(-w // 8), 1), dtype=np.int64))[:h, :w]
    return np.clip(big, 0, 255).astype(np.uint8)


def act_cli(cli, workdir, checkpoint, images, prompt, state, extra=()):
    """`focusvla act --json` on PNG files of the same uint8 arrays (lossless) -> float64 (8, 7)."""
    workdir.mkdir(parents=True, exist_ok=True)
    args = [cli, "act", "--checkpoint", str(checkpoint), "--instruction", prompt, "--unnorm-key", UNNORM,
            "--device", "cpu", "--json", *extra]
    for i, image in enumerate(images):
        path = workdir / f"image{i}.png"
        Image.fromarray(image).save(path)
        args += ["--image", str(path)]
    if state is not None:
        # repr of the float64 value of each element (float32 ones included) round-trips exactly.
        args += ["--proprio", ",".join(repr(float(v)) for v in np.asarray(state).ravel())]
    out = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, f"focusvla act failed ({out.returncode}): {out.stderr}"
    actions = np.asarray(json.loads(out.stdout)["actions"], dtype=np.float64)
    assert actions.shape == (8, 7)
    return actions


def relative_error(got, want):
    return float(np.abs(np.asarray(got, dtype=np.float64) - want).max() / np.abs(want).max())
