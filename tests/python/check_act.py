#!/usr/bin/env python3
"""`focusvla act` end to end: PNG files on disk, the LIBERO task and state, checkpoints written by
gen_policy.py.

1. With no format, crop or dtype flag, the printed JSON actions equal the reference's LIBERO
   evaluation (get_vla_action with run_libero_eval.py's defaults: Qwen chat prompt, center crop),
   and the JSON says what ran: the prompt text and its ids (checked against the HF tokenizer),
   center crop, dtype, device, matmul mode, unnorm key, cameras.
2. With explicit flags, the `In: ... Out:` prompt without crop equals that reference case.
3. Bad arguments get a named error with exit status 2 (usage) or 1 (bad input), never an internal
   error; every command answers --help; --repeat reports min / p50 / p99.

    check_act.py FOCUSVLA_CLI POLICY_DATA_DIR
"""
import json
import os
import subprocess
import sys

import numpy as np
from safetensors.numpy import load_file

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from reference_policy import PROMPTS  # noqa: E402

ASSETS = os.environ.get("FOCUSVLA_ASSETS", os.path.join(HERE, "..", "..", "assets"))
SAMPLE = os.path.join(ASSETS, "libero-sample")
FAILURES = []


def check(condition, message):
    print(("ok    " if condition else "FAIL  ") + message)
    if not condition:
        FAILURES.append(message)


def case(data, name):
    return next(c for c in json.load(open(os.path.join(data, "cases.json"))) if c["name"] == name)


def run(cli, args):
    return subprocess.run([cli] + args, capture_output=True, text=True, errors="replace")


def act_args(data, c, obs):
    return ["act", "--checkpoint", os.path.join(data, c["checkpoint"]),
            "--image", os.path.join(SAMPLE, "agentview.png"), "--image", os.path.join(SAMPLE, "wrist.png"),
            "--instruction", obs["instruction"], "--proprio", ",".join(repr(v) for v in obs["proprio"]),
            "--unnorm-key", c["unnorm_key"]]


def relative_error(got, want):
    return np.abs(np.asarray(got) - want).max() / np.abs(want).max()


def check_defaults(cli, data, tensors, name):
    """No --prompt-format / --center-crop / --dtype: the reference's LIBERO evaluation."""
    from transformers import AutoTokenizer
    c = case(data, name)
    obs = c["observations"][0]  # the LIBERO sample's own images, task and state
    out = run(cli, act_args(data, c, obs) + ["--json"])
    check(out.returncode == 0, f"{name}: act with default settings exits 0 ({out.stderr.strip()})")
    if out.returncode != 0:
        return
    j = json.loads(out.stdout)
    err = relative_error(j["actions"], tensors[obs["key"] + ".actions"])
    check(err <= 1e-4, f"{name}: default settings vs the reference's LIBERO evaluation: relative error {err:.2e}")
    stages = ["preprocess_ms", "vision_ms", "projector_ms", "llm_ms", "head_ms", "device_ms", "total_ms"]
    check(set(j["timing"]) == set(stages + ["cuda_graph"]) and j["timing"]["total_ms"] > 0 and j["load_ms"] > 0,
          f"{name}: --json names the stage times as every front end does (timing_fields): {j['timing']}")
    s = j["settings"]
    check(s["prompt_format"] == "qwen-chat" and "qwen25" in s["prompt_format_source"],
          f"{name}: settings name the prompt format and why: {s['prompt_format']} ({s['prompt_format_source']})")
    check(s["center_crop"] is True, f"{name}: settings say center crop on")
    check(s["dtype"] == "float32" and s["dtype_source"] == "checkpoint float32" and s["matmul"] == "fp32",
          f"{name}: fp32 weights run in float32: {s['dtype']} ({s['dtype_source']}), matmul {s['matmul']}")
    check(s["device"] == "cpu" and s["unnorm_key"] == c["unnorm_key"] and s["cameras"] == 2,
          f"{name}: device {s['device']}, unnorm key {s['unnorm_key']}, cameras {s['cameras']}")
    text = PROMPTS["qwen-chat"].format(task=obs["instruction"].lower())
    check(j["prompt"]["text"] == text, f"{name}: the prompt text is the reference's")
    tokenizer = AutoTokenizer.from_pretrained(os.path.join(data, c["checkpoint"], ".tokenizer"))
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    check(j["prompt"]["ids"] == ids, f"{name}: the prompt ids are the HF tokenizer's ({len(ids)} ids)")
    table = run(cli, act_args(data, c, obs))
    check(table.returncode == 0 and "prompt qwen-chat" in table.stdout and "center crop on" in table.stdout
          and "dtype float32" in table.stdout and "matmul fp32" in table.stdout and json.dumps(ids, separators=(",", ":")) in table.stdout,
          f"{name}: the table prints the settings, the prompt and its ids")


def check_explicit(cli, data, tensors):
    """The older openvla / no-crop reference case through explicit flags."""
    c = case(data, "focus_openvla")
    obs = c["observations"][0]
    out = run(cli, act_args(data, c, obs) + ["--prompt-format", "openvla", "--no-center-crop", "--dtype", "float32",
                                             "--json", "--repeat", "3"])
    check(out.returncode == 0, f"focus_openvla: explicit flags exit 0 ({out.stderr.strip()})")
    if out.returncode != 0:
        return
    j = json.loads(out.stdout)
    err = relative_error(j["actions"], tensors[obs["key"] + ".actions"])
    check(err <= 1e-4, f"focus_openvla: --prompt-format openvla --no-center-crop: relative error {err:.2e}")
    check(j["settings"]["prompt_format_source"] == "option" and j["settings"]["center_crop"] is False,
          "explicit options are reported as options")
    r = j["repeat"]
    check(r["calls"] == 3 and 0 < r["total_ms"]["min"] <= r["total_ms"]["p50"] <= r["total_ms"]["p99"],
          f"--repeat 3 reports min <= p50 <= p99: {r}")


def check_errors(cli, data):
    c = case(data, "focus_openvla")
    base = act_args(data, c, c["observations"][0])
    cases = [
        (["--threads", "abc"], 2, ["--threads", "'abc'", "not an integer"]),
        (["--threads", "0"], 2, ["--threads", "out of range"]),
        (["--num-images", "x"], 2, ["--num-images", "not an integer"]),
        (["--repeat", "x"], 2, ["--repeat", "not an integer"]),
        (["--dtype", "int8"], 2, ["--dtype", "int8"]),
        (["--prompt-format", "llama"], 2, ["--prompt-format", "llama"]),
        (["--center-crop", "--no-center-crop"], 2, ["--center-crop", "--no-center-crop"]),
        (["--bogus"], 2, ["--bogus"]),
        (["--device", "cuda:7"], 1, ["--device", "cuda:7"]),
        (["--device", "tpu"], 1, ["--device", "tpu"]),
        (["--num-images", "3"], 1, ["--num-images 3", "2 --image"]),
        (["--proprio", "1,2"], 1, ["proprio", "has 2 values", "takes 8"]),
        (["--proprio", "1,x"], 1, ["--proprio", "'x'", "not a number"]),
        (["--image", os.path.join(HERE, "no_such.png")], 1, ["no_such.png"]),
    ]
    for extra, status, words in cases:
        out = run(cli, base + extra)
        ok = out.returncode == status and all(w in out.stderr for w in words) and "internal error" not in out.stderr
        check(ok, f"act {' '.join(extra)}: exit {out.returncode}, {out.stderr.strip().splitlines()[:1]}")
    # Invalid UTF-8 in the instruction (bytes in argv): named, not "lowercase: ...".
    args = [a.encode() for a in [cli] + base]
    args[args.index(b"--instruction") + 1] = b"put the \xff bowl"
    out = subprocess.run(args, capture_output=True)
    err = out.stderr.decode(errors="replace")
    check(out.returncode == 1 and "instruction" in err and "invalid UTF-8" in err,
          f"invalid UTF-8 in --instruction: exit {out.returncode}, {err.strip()}")
    for command in (["--help"], ["act", "--help"], ["inspect", "--help"], ["version", "--help"]):
        out = run(cli, command)
        check(out.returncode == 0 and "Usage" in out.stdout, f"focusvla {' '.join(command)} answers with its usage")
    out = run(cli, [])
    check(out.returncode == 2 and "error" in out.stderr, "focusvla with no command: usage error")


def main():
    cli, data = sys.argv[1], sys.argv[2]
    tensors = load_file(os.path.join(data, "tensors.safetensors"))
    check_defaults(cli, data, tensors, "focus_libero_eval")
    check_defaults(cli, data, tensors, "pro_libero_eval")
    check_explicit(cli, data, tensors)
    check_errors(cli, data)
    print(f"{len(FAILURES)} failure(s)")
    return 1 if FAILURES else 0


if __name__ == "__main__":
    sys.exit(main())
