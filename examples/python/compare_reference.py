#!/usr/bin/env python3
"""focusvla against the Python reference pipeline, side by side in one process: the same
checkpoint, observation, settings, dtype and device; prints the max relative difference of the
actions and the median act latency of each.

The reference is tests/python/reference_policy.py (timm encoders, transformers Qwen2Model, HF
tokenizer, the VLA-Adapter / FocusVLA heads), the oracle of the test suite; it runs with the
settings focusvla resolved (prompt format, center crop, dtype).

    python examples/python/compare_reference.py CHECKPOINT [--size full|tiny] [--iters 5]
        [--device cpu] [--unnorm-key libero_spatial_no_noops] [--threads N]
"""
import argparse
import json
import os
import statistics
import sys
import time

import numpy as np
from PIL import Image

import focusvla
import torch

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
sys.path.insert(0, os.path.join(ROOT, "tests", "python"))
from reference_policy import ReferencePolicy  # noqa: E402

ASSETS = os.environ.get("FOCUSVLA_ASSETS", os.path.join(ROOT, "assets"))


def median_ms(call, iters):
    times = []
    for _ in range(iters):
        start = time.perf_counter()
        result = call()
        times.append((time.perf_counter() - start) * 1e3)
    return result, statistics.median(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint")
    parser.add_argument("--size", default="full", choices=["full", "tiny"],
                        help="encoder sizes of the checkpoint (tiny: the test suite's)")
    parser.add_argument("--iters", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--unnorm-key", default="libero_spatial_no_noops")
    parser.add_argument("--threads", type=int, default=0)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    sample = os.path.join(ASSETS, "libero-sample")
    meta = json.load(open(os.path.join(sample, "observation.json")))
    images = [np.asarray(Image.open(os.path.join(sample, meta["images"][k])).convert("RGB"))
              for k in ("agentview", "wrist")]
    task, state = meta["task_description"], meta["state"]

    policy = focusvla.Policy.load(args.checkpoint, device=args.device, unnorm_key=args.unnorm_key,
                                  threads=args.threads)
    s = policy.settings
    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[s["dtype"]]
    reference = ReferencePolicy(args.checkpoint, args.size, dtype).to(args.device)

    policy.act(images, task, state)  # warm-up (buffers of this shape; a CUDA graph on the 2nd call)
    ours, ours_ms = median_ms(lambda: policy.act(images, task, state), args.iters)
    ref, ref_ms = median_ms(lambda: reference.act(images, task, state, s["prompt_format"], args.unnorm_key,
                                                   center_crop=s["center_crop"])["actions"], args.iters)
    diff = np.abs(ours - ref).max() / max(np.abs(ref).max(), 1e-30)
    print(f"settings: prompt {s['prompt_format']}, center crop {s['center_crop']}, dtype {s['dtype']}, "
          f"device {s['device']}, matmul {s['matmul']}")
    print(f"max relative difference of the actions: {diff:.2e}")
    print(f"act p50: focusvla {ours_ms:.1f} ms, reference {ref_ms:.1f} ms ({ref_ms / ours_ms:.2f}x)")


if __name__ == "__main__":
    main()
