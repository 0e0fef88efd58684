#!/usr/bin/env python3
"""An evaluation loop in the shape LIBERO evaluations are written (run_libero_eval.py):
observation -> policy.act -> execute the 8-step chunk open-loop -> next observation.

There is no simulator offline, so `SampleEnv` replays the LIBERO sample observation
(assets/libero-sample: agentview + wrist camera, 8-dim robot state, the task) and integrates the
commanded end-effector deltas into the state; swap it for `libero.libero.envs.OffScreenRenderEnv`
in a real evaluation. Prints each chunk's first action and the act latency percentiles.

    python examples/python/libero_eval_loop.py CHECKPOINT [--chunks 5] [--device cpu]
        [--unnorm-key libero_spatial_no_noops]

CHECKPOINT: a VLA-Adapter / FocusVLA release directory, or build/demo-checkpoint (scripts/demo
writes it: full-size FocusVLA with RANDOM weights, so the actions mean nothing).
"""
import argparse
import json
import os
import time

import numpy as np
from PIL import Image

import focusvla

ASSETS = os.environ.get("FOCUSVLA_ASSETS", os.path.join(os.path.dirname(__file__), "..", "..", "assets"))


class SampleEnv:
    """A stand-in for the LIBERO environment: the sample's images, a state that moves."""

    def __init__(self, sample_dir):
        meta = json.load(open(os.path.join(sample_dir, "observation.json")))
        self.task = meta["task_description"]
        self.images = {k: np.asarray(Image.open(os.path.join(sample_dir, v)).convert("RGB"))
                       for k, v in meta["images"].items()}
        self.initial_state = np.asarray(meta["state"], dtype=np.float64)

    def reset(self):
        self.state = self.initial_state.copy()
        return self.observation()

    def observation(self):
        return {"full_image": self.images["agentview"], "wrist_image": self.images["wrist"], "state": self.state}

    def step(self, action):
        self.state[:6] += 0.01 * np.asarray(action[:6])  # end-effector deltas; gripper as is
        return self.observation()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint")
    parser.add_argument("--chunks", type=int, default=5, help="policy calls (8 env steps each)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--unnorm-key", default="libero_spatial_no_noops")
    args = parser.parse_args()

    # The defaults are the reference's evaluation settings: Qwen chat prompt for the Qwen2.5
    # backbone, 0.9 center crop, the checkpoint's bf16 where the device computes it natively.
    policy = focusvla.Policy.load(args.checkpoint, device=args.device, unnorm_key=args.unnorm_key)
    print("settings:", policy.settings)
    env = SampleEnv(os.path.join(ASSETS, "libero-sample"))
    obs = env.reset()
    latencies = []
    for chunk_index in range(args.chunks):
        start = time.perf_counter()
        actions = policy.act([obs["full_image"], obs["wrist_image"]], env.task, obs["state"])
        latencies.append((time.perf_counter() - start) * 1e3)
        print(f"chunk {chunk_index}: first action {np.array2string(actions[0], precision=4)}  "
              f"({latencies[-1]:.1f} ms)")
        for action in actions:  # open loop: the whole chunk, then observe again
            obs = env.step(action)
    p50, p99 = np.percentile(latencies, [50, 99])
    print(f"act latency over {len(latencies)} calls: p50 {p50:.1f} ms, p99 {p99:.1f} ms "
          f"(the first call of a shape includes one-time work)")


if __name__ == "__main__":
    main()
