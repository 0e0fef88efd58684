"""ctest eval_libero: scripts/eval_libero (run_libero_eval.py's loop, focusvla and the Python reference
side by side) on the tiny test checkpoint: one libero_spatial episode of 16 policy steps after the 10
settle steps, --policy both, then the named errors of user mistakes. Asserts the JSON report's
structure, that the steps ran, that the latencies are positive and finite, and that both policies
chose the same first chunk from the same observation; no timing assertions. Run by
tests/python/run_vla_eval.sh in the scratch venv over .venv-sim (FOCUSVLA_EVAL_PYTHON: this Python)."""

import json
import math
import os
import subprocess
import sys

import pytest

SRC = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
SCRIPT = os.path.join(SRC, "scripts", "eval_libero")
CKPT = os.path.join(os.environ.get("FOCUSVLA_TEST_DATA", "build/test_data"), "policy", "focus_f32")
STEPS, WAIT = 16, 10


def run(args, timeout=600):
    env = dict(os.environ, FOCUSVLA_EVAL_PYTHON=sys.executable)
    return subprocess.run([SCRIPT, *args], env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module", autouse=True)
def checkpoint():
    if not os.path.isdir(CKPT):
        pytest.skip(f"no test checkpoint at {CKPT}")


def test_both_policies_one_episode(tmp_path):
    out = tmp_path / "report.json"
    r = run(["--checkpoint", CKPT, "--suite", "libero_spatial", "--tasks", "0", "--episodes", "1",
             "--max-steps", str(STEPS), "--num-steps-wait", str(WAIT), "--policy", "both", "--threads", "1",
             "--out", str(out), "--no-progress"])
    print(r.stdout)
    assert r.returncode == 0, r.stderr[-4000:]
    assert "RANDOM WEIGHTS" in r.stdout and "episodes / hour" in r.stdout
    report = json.loads(out.read_text())
    assert report["suite"] == "libero_spatial" and report["unnorm_key"] == "libero_spatial_no_noops"
    assert report["max_steps"] == STEPS and report["num_steps_wait"] == WAIT and report["chunk"] == 8
    assert report["weights"]["random"] is True  # make_checkpoint.py's statistics are recognized
    assert report["machine"]["cpu"]["logical_cpus"] >= 1 and report["machine"]["torch_threads"] == 1
    assert set(report["policies"]) == {"focusvla", "reference"}
    for name, p in report["policies"].items():
        assert p["episodes"] == 1 and p["errors"] == [], (name, p["errors"])
        ep = p["per_episode"][0]
        assert ep["task_id"] == 0 and ep["episode"] == 0
        if ep["success"]:  # a random policy does not finish the task; if it did, fewer steps ran
            assert 1 <= ep["policy_steps"] <= STEPS
        else:
            assert ep["policy_steps"] == STEPS and p["env_steps"] == STEPS + WAIT, (name, ep)
            assert p["acts"] == STEPS // 8
        assert set(ep["gripper_values"]) <= {-1.0, 0.0, 1.0}
        for key in ("act_ms_p50", "act_ms_p99", "act_ms_mean", "sim_step_ms_mean", "steps_per_s", "episode_s_mean",
                    "episodes_per_hour_measured", "full_length_episode_s", "episodes_per_hour_full_length"):
            assert math.isfinite(p[key]) and p[key] > 0, (name, key, p[key])
        assert p["act_ms_p99"] >= p["act_ms_p50"]
    # Same initial state and settle steps: the same first observation, so the same first chunk (f32).
    (diff,) = report["first_chunk_max_abs_diff"]
    assert diff < 1e-4, diff


@pytest.mark.parametrize("args,expect", [
    (["--checkpoint", "/nonexistent/checkpoint"], "checkpoint directory not found"),
    (["--checkpoint", CKPT, "--suite", "libero_nope"], "unknown suite 'libero_nope'"),
    (["--checkpoint", CKPT, "--unnorm-key", "nope"], "unknown unnorm key 'nope'"),
    (["--checkpoint", CKPT, "--suite", "libero_goal"], "no statistics for libero_goal"),
])
def test_named_errors(args, expect):
    r = run(args, timeout=120)
    assert r.returncode == 2, (r.returncode, r.stderr[-2000:])
    assert expect in r.stderr and "Traceback" not in r.stderr, r.stderr[-2000:]


def test_missing_sim_venv(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "FOCUSVLA_EVAL_PYTHON"}
    env["FOCUSVLA_SIM_VENV"] = str(tmp_path / "no-venv-sim")
    env["FOCUSVLA_NO_SETUP"] = "1"
    r = subprocess.run([SCRIPT, "--checkpoint", CKPT], env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "simulation venv" in r.stderr and "Traceback" not in r.stderr, r.stderr
