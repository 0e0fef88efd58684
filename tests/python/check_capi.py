#!/usr/bin/env python3
"""The C ABI end to end: tests/capi/test_capi.c (a C program, built with AddressSanitizer and leak
detection) acts through include/focusvla/focusvla.h on the reference's LIBERO evaluation case of
gen_policy.py (focus_libero_eval: library defaults = the reference's evaluation settings), and
its actions must equal
  1. the reference pipeline's actions (tensors.safetensors) within the policy group's 1e-4, and
  2. the C++ API's, through `focusvla act --json` on the same pixels (PNG, lossless): exactly;
  3. then again on a copy of the checkpoint whose config.json has no num_images_in_input (as the
     released VLA-Adapter checkpoints): num_images 0, the camera count of each call, the same
     actions exactly.

    check_capi.py TEST_CAPI FOCUSVLA_CLI POLICY_DATA_DIR SCRATCH_DIR
"""
import json
import os
import shutil
import subprocess
import sys

import numpy as np
from PIL import Image
from safetensors.numpy import load_file


def main(test_capi, cli, data, scratch):
    os.makedirs(scratch, exist_ok=True)
    case = next(c for c in json.load(open(os.path.join(data, "cases.json"))) if c["name"] == "focus_libero_eval")
    tensors = load_file(os.path.join(data, "tensors.safetensors"))
    obs = case["observations"][0]
    checkpoint = os.path.join(data, case["checkpoint"])
    raw, png = [], []
    for i in range(obs["cameras"]):
        image = np.ascontiguousarray(tensors[f"{obs['key']}.image{i}"])
        assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
        raw.append(os.path.join(scratch, f"image{i}.rgb"))
        image.tofile(raw[-1])
        png.append(os.path.join(scratch, f"image{i}.png"))
        Image.fromarray(image).save(png[-1])
    height, width = tensors[f"{obs['key']}.image0"].shape[:2]
    proprio = ",".join(repr(float(v)) for v in obs["proprio"])
    out = os.path.join(scratch, "actions.txt")

    def run_test_capi(checkpoint_dir, per_call_cameras):
        env = dict(os.environ, FOCUSVLA_TEST_PER_CALL_CAMERAS="1" if per_call_cameras else "0")
        run = subprocess.run([test_capi, checkpoint_dir, case["unnorm_key"], obs["instruction"], proprio, out,
                              str(height), str(width)] + raw, capture_output=True, text=True, env=env)
        sys.stdout.write(run.stdout)
        sys.stderr.write(run.stderr)
        if run.returncode != 0:
            sys.exit(f"FAIL test_capi exited with {run.returncode}")
        return np.loadtxt(out).reshape(8, 7)

    ours = run_test_capi(checkpoint, False)

    want = tensors[obs["key"] + ".actions"].astype(np.float64)
    error = np.abs(ours - want).max() / np.abs(want).max()
    print(f"C ABI vs reference: relative error {error:.2e}")
    if not error <= 1e-4:
        sys.exit("FAIL C ABI actions differ from the reference's")

    cli_run = subprocess.run([cli, "act", "--checkpoint", checkpoint, "--unnorm-key", case["unnorm_key"],
                              "--instruction", obs["instruction"], "--proprio", proprio, "--json"]
                             + [a for p in png for a in ("--image", p)], capture_output=True, text=True)
    if cli_run.returncode != 0:
        sys.exit(f"FAIL focusvla act: {cli_run.stderr}")
    cpp = np.array(json.loads(cli_run.stdout)["actions"])
    if not np.array_equal(ours, cpp):
        sys.exit(f"FAIL C ABI vs C++ API (focusvla act): max difference {np.abs(ours - cpp).max():.3e}")
    print("C ABI vs C++ API (focusvla act): identical")

    released = os.path.join(scratch, "no_num_images_in_input")
    shutil.rmtree(released, ignore_errors=True)
    shutil.copytree(checkpoint, released)
    config_path = os.path.join(released, "config.json")
    config = json.load(open(config_path))
    del config["num_images_in_input"]
    json.dump(config, open(config_path, "w"))
    per_call = run_test_capi(released, True)
    shutil.rmtree(released)
    if not np.array_equal(per_call, ours):
        sys.exit(f"FAIL C ABI without num_images_in_input: max difference {np.abs(per_call - ours).max():.3e}")
    print("C ABI on a checkpoint without num_images_in_input (cameras per call): identical")


if __name__ == "__main__":
    main(*sys.argv[1:5])
