#!/usr/bin/env python3
"""`focusvla inspect` on a full-size checkpoint directory in the release layout (real key names and
shapes from timm / transformers, random bf16 weights, sharded like a release), compared with the
counts the reference modules give. Also checks the CLI's error path.

    check_inspect.py FOCUSVLA_CLI WORK_DIR
"""
import json
import os
import shutil
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "scripts"))
import make_checkpoint  # noqa: E402


def main():
    cli, work = sys.argv[1], sys.argv[2]
    try:
        return check(cli, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)  # 2.9 GB: never left behind, pass or fail


def check(cli, work):
    ckpt = os.path.join(work, "checkpoint")
    shutil.rmtree(work, ignore_errors=True)
    expected = make_checkpoint.write_directory(ckpt, size="full", dtype="bf16", shards=2, head="pro")
    out = subprocess.run([cli, "inspect", "--json", ckpt], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout)
    failures = []
    comps = {c["name"]: c for c in got["components"]}
    if set(comps) != set(expected["components"]):
        failures.append(f"components {sorted(comps)} != {sorted(expected['components'])}")
    for name, want in expected["components"].items():
        have = comps.get(name, {})
        for key in ("tensors", "parameters", "dtypes"):
            if have.get(key) != want[key]:
                failures.append(f"{name}.{key}: focusvla says {have.get(key)}, reference {want[key]}")
    if got["total"] != expected["total"]:
        failures.append(f"total {got['total']} != {expected['total']}")
    if got["config"]["text_config"]["num_hidden_layers"] != 24 or got["config"]["text_config"]["hidden_size"] != 896:
        failures.append(f"text_config {got['config']['text_config']}")
    text = subprocess.run([cli, "inspect", ckpt], capture_output=True, text=True)
    assert text.returncode == 0, text.stderr
    print(text.stdout)
    bad = subprocess.run([cli, "inspect", os.path.join(work, "absent")], capture_output=True, text=True)
    if bad.returncode != 1 or "not a directory" not in bad.stderr:
        failures.append(f"inspect of a missing directory: rc {bad.returncode}, stderr {bad.stderr!r}")
    if failures:
        print("\n".join(failures))
        return 1
    print(f"inspect matches the reference: {expected['total']['tensors']} tensors, "
          f"{expected['total']['parameters']:,} parameters")
    return 0


if __name__ == "__main__":
    sys.exit(main())
