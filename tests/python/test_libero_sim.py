"""ctest libero_sim: closed-loop LIBERO (robosuite 1.4 on MuJoCo, offscreen through Mesa's EGL) with
focusvla choosing the actions, on the tiny test checkpoint (2 cameras + 8-dim state): one task of
libero_spatial, one episode, LIBERO_SIM_STEPS (24) policy steps after the 10 settle steps.

  1. vla-eval's own LIBERO benchmark driving FocusVLAModelServer (focusvla.vla_eval.evaluate: the
     server on a background thread, the benchmark in this process): the results JSON is written, the
     episode ran its steps without an error, every executed gripper command is +-1.
  2. examples/libero/openpi_loop.py (openpi-client against `focusvla serve`, openpi's LIBERO loop):
     its JSON, the queries every 5 steps.
Prints the time per environment step and per query. Run by tests/python/run_vla_eval.sh in the
scratch venv over .venv-sim (LIBERO_CONFIG_PATH, MUJOCO_GL=egl set there)."""

import glob
import json
import os
import subprocess
import sys
import time

import pytest

SRC = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
CKPT = os.path.join(os.environ.get("FOCUSVLA_TEST_DATA", "build/test_data"), "policy", "focus_f32")
UNNORM = "libero_spatial_no_noops"
STEPS = int(os.environ.get("LIBERO_SIM_STEPS", "24"))


@pytest.fixture(scope="module", autouse=True)
def checkpoint():
    if not os.path.isdir(CKPT):
        pytest.skip(f"no test checkpoint at {CKPT}")


def test_vla_eval_libero_closed_loop(tmp_path):
    import focusvla
    from focusvla.vla_eval import FocusVLAModelServer, evaluate

    server = FocusVLAModelServer(CKPT, unnorm_key=UNNORM, threads=1)
    t0 = time.perf_counter()
    results = evaluate(os.path.join(SRC, "examples", "vla_eval", "libero_spatial.yaml"), server=server,
                       output_dir=str(tmp_path),
                       benchmark_overrides={"episodes_per_task": 1, "max_tasks": 1, "max_steps": STEPS})
    wall = time.perf_counter() - t0
    assert len(results) == 1, results
    r = results[0]
    aggregate = tmp_path / "LIBEROBenchmark_spatial_aggregate.json"
    assert aggregate.is_file(), sorted(glob.glob(str(tmp_path / "**"), recursive=True))
    written = json.loads(aggregate.read_text())
    assert written["benchmark"] == "LIBEROBenchmark_spatial" and written["mean_success"] == r["mean_success"]
    assert written["server_info"]["model_server"] == "FocusVLAModelServer"
    assert written["server_info"]["observation_params"]["send_wrist_image"] is True
    assert r.get("num_errors", 0) == 0, json.dumps(r, default=str)[:2000]
    (task,) = written["tasks"]
    (ep,) = task["episodes"]
    assert ep["metrics"]["success"] or ep["steps"] == STEPS, ep
    assert not ep.get("failure_reason"), ep
    # 8 actions open loop: one query per 8 observations.
    assert server.counters["observations"] == ep["steps"] and server.counters["errors"] == 0, server.counters
    assert server.counters["queries"] == -(-ep["steps"] // 8), server.counters
    print(f"\nvla-eval LIBERO: {wall:.1f} s for 1 episode of {ep['steps']} policy steps (env build and 10 "
          f"settle steps included; episode {ep['elapsed_sec']} s, {1000 * ep['elapsed_sec'] / ep['steps']:.0f} ms "
          f"per step with the policy, {ep['steps'] / ep['elapsed_sec']:.2f} steps/s); {aggregate}")


def test_openpi_loop(tmp_path):
    cli = os.environ.get("FOCUSVLA_CLI", "")
    if not os.access(cli, os.X_OK):
        pytest.skip(f"no focusvla CLI at {cli!r}")
    server = subprocess.Popen([cli, "serve", "--checkpoint", CKPT, "--unnorm-key", UNNORM, "--port", "0",
                               "--threads", "1", "--stats-interval-s", "0"],
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        line = server.stdout.readline()
        if "listening on ws://" not in line and server.poll() is not None:
            pytest.skip(f"`focusvla serve` did not start (built without Boost.Beast / msgpack-cxx?): {line!r}")
        assert "listening on ws://" in line, line
        port = int(line.split("ws://", 1)[1].split()[0].rsplit(":", 1)[1])
        out = tmp_path / "openpi_loop.json"
        t0 = time.perf_counter()
        subprocess.run([sys.executable, os.path.join(SRC, "examples", "libero", "openpi_loop.py"), "--port", str(port),
                        "--task-ids", "0", "--episodes", "1", "--max-steps", str(STEPS), "--out", str(out)],
                       check=True, timeout=900)
        wall = time.perf_counter() - t0
    finally:
        server.terminate()
        server.wait(timeout=60)
    summary = json.loads(out.read_text())
    ep = summary["episodes"][0]
    print(f"\nopenpi loop: {wall:.1f} s; env build {ep['env_build_s']} s, {ep['env_step_ms']} ms per env step, "
          f"{ep['query_ms']} ms per query ({ep['queries']} queries for {ep['steps']} steps)")
    assert ep["steps"] == STEPS or ep["success"]
    assert ep["queries"] == -(-ep["steps"] // 5)  # replan every 5 steps
    assert set(ep["gripper_values"]) <= {-1.0, 0.0, 1.0}
