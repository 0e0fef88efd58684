#!/usr/bin/env python3
"""`focusvla act` end to end: PNG files on disk, the LIBERO task and state, a checkpoint written
by gen_policy.py; the printed JSON actions must match the Python reference pipeline's.

    check_act.py FOCUSVLA_CLI POLICY_DATA_DIR
"""
import json
import os
import subprocess
import sys

import numpy as np
from safetensors.numpy import load_file

ASSETS = os.environ.get("FOCUSVLA_ASSETS", os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "assets"))


def main():
    cli, data = sys.argv[1], sys.argv[2]
    case = next(c for c in json.load(open(os.path.join(data, "cases.json"))) if c["name"] == "focus_openvla")
    obs = case["observations"][0]
    sample = os.path.join(ASSETS, "libero-sample")
    cmd = [cli, "act", "--checkpoint", os.path.join(data, case["checkpoint"]),
           "--image", os.path.join(sample, "agentview.png"), "--image", os.path.join(sample, "wrist.png"),
           "--instruction", obs["instruction"], "--proprio", ",".join(repr(v) for v in obs["proprio"]),
           "--unnorm-key", case["unnorm_key"], "--json"]
    out = subprocess.run(cmd, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    got = np.array(json.loads(out.stdout)["actions"])
    want = load_file(os.path.join(data, "tensors.safetensors"))[obs["key"] + ".actions"]
    err = np.abs(got - want).max() / np.abs(want).max()
    print(f"focusvla act vs reference: relative error {err:.2e}")
    bad = subprocess.run(cmd[:-1] + ["--proprio", "1,2"], capture_output=True, text=True)
    assert bad.returncode == 1 and "proprio" in bad.stderr, (bad.returncode, bad.stderr)
    return 0 if err <= 1e-4 else 1


if __name__ == "__main__":
    sys.exit(main())
