#!/usr/bin/env python3
"""LIBERO evaluation of a checkpoint, in the shape of VLA-Adapter's
experiments/robot/libero/run_libero_eval.py, for focusvla and/or the Python reference of one act
(tests/python/reference_policy.py), on the same environments, initial states and seeds.

Run it through scripts/eval_libero (the wrapper: .venv-sim, LIBERO_CONFIG_PATH, MUJOCO_GL=egl, the
focusvla wheel):

    scripts/eval_libero --checkpoint DIR --suite libero_spatial --episodes 10 --policy both --out r.json

The loop is the reference's: the benchmark's task and initial state, OffScreenRenderEnv at 256x256
with env.seed(0), --num-steps-wait (10) steps of the dummy action [0]*6 + [-1], then per step the
frames rotated 180 degrees (img[::-1, ::-1]) and the 8-dim state (eef pos, axis-angle of the eef
quaternion, gripper qpos); the policy is queried when the 8-action queue is empty and the chunk runs
open loop; each action's gripper goes through normalize_gripper_action(binarize=True) and
invert_gripper_action; `done` ends the episode as a success; an episode fails after --max-steps
(the suite's TASK_MAX_STEPS) policy steps. Both policies get the 256x256 frames: focusvla applies the
reference's JPEG round trip + Lanczos resize to 224 and the 0.9 center crop itself (Policy.load's
defaults), the reference does it with TensorFlow (prepare_images_for_vla). The reference loop's
rollout MP4 per episode is not written (not part of the policy's cost).

Reports per policy: episodes, successes, success rate, env steps, steps per second, act latency
p50 / p99, sim time per step, time per episode, episodes per hour (measured, and extrapolated to
full-length episodes), with the CPU, threads and dtype. A checkpoint with random weights (written by
scripts/make_checkpoint.py / scripts/demo, or --random-weights) succeeds 0% by construction: the
report says so, and the number that matters is then the throughput.
"""

import argparse
import json
import math
import os
import platform
import sys
import time
from collections import deque

import numpy as np

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))

# The reference's TASK_MAX_STEPS (run_libero_eval.py): the longest training demo plus a margin.
TASK_MAX_STEPS = {"libero_spatial": 220, "libero_object": 280, "libero_goal": 300, "libero_10": 520,
                  "libero_90": 400}
SUITES = sorted(TASK_MAX_STEPS)
DUMMY_ACTION = [0.0] * 6 + [-1.0]  # get_libero_dummy_action
ENV_RESOLUTION = 256  # cfg.env_img_res
CHUNK = 8  # cfg.num_open_loop_steps
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from eval_libero_policies import FocusVLA, Reference, TFResizer, UsageError, fail  # noqa: E402


# ---------------------------------------------------------------------------------------------
# The reference's helpers (experiments/robot/libero/libero_utils.py, robot_utils.py)

def quat2axisangle(quat):
    """robosuite's quat2axisangle, as libero_utils copies it: (x, y, z, w) -> axis * angle."""
    quat = np.array(quat, dtype=np.float64)
    quat[3] = min(max(quat[3], -1.0), 1.0)
    den = np.sqrt(1.0 - quat[3] * quat[3])
    if math.isclose(den, 0.0):
        return np.zeros(3)
    return (quat[:3] * 2.0 * math.acos(quat[3])) / den


def observation(obs):
    """get_libero_image / get_libero_wrist_image (rotate 180 degrees) and prepare_observation's state."""
    img = np.ascontiguousarray(obs["agentview_image"][::-1, ::-1])
    wrist = np.ascontiguousarray(obs["robot0_eye_in_hand_image"][::-1, ::-1])
    state = np.concatenate((obs["robot0_eef_pos"], quat2axisangle(obs["robot0_eef_quat"]),
                            obs["robot0_gripper_qpos"]))
    return [img, wrist], state


def process_action(action):
    """normalize_gripper_action(binarize=True) then invert_gripper_action (model_family openvla)."""
    a = np.array(action, dtype=np.float64, copy=True)
    a[-1] = 2.0 * (a[-1] - 0.0) / (1.0 - 0.0) - 1.0
    a[-1] = np.sign(a[-1])
    a[-1] *= -1.0
    return a


# ---------------------------------------------------------------------------------------------
# Checkpoint checks (before anything heavy is imported)

def read_norm_stats(ckpt):
    stats = {}
    try:
        with open(os.path.join(ckpt, "config.json")) as f:
            stats.update(json.load(f).get("norm_stats", {}) or {})
    except (OSError, ValueError) as e:
        fail(f"checkpoint {ckpt}: config.json unreadable ({e})")
    path = os.path.join(ckpt, "dataset_statistics.json")
    if os.path.exists(path):
        try:
            with open(path) as f:
                stats.update(json.load(f))
        except (OSError, ValueError) as e:
            fail(f"checkpoint {ckpt}: dataset_statistics.json unreadable ({e})")
    return stats


def pick_unnorm_key(stats, suite, requested):
    keys = sorted(stats)
    if requested:
        if requested not in stats:
            fail(f"unknown unnorm key {requested!r}: the checkpoint's statistics are {', '.join(keys) or '(none)'}")
        return requested
    # check_unnorm_key: the suite's name, else <suite>_no_noops.
    for key in (f"{suite}_no_noops", suite):
        if key in stats:
            return key
    fail(f"the checkpoint has no statistics for {suite} ({suite}_no_noops or {suite}); its keys are "
         f"{', '.join(keys) or '(none)'}: pass --unnorm-key KEY to use one of them")


def random_weights(ckpt, stats, declared):
    """(random?, why). scripts/make_checkpoint.py writes no marker file, but its
    dataset_statistics.json carries synthetic proprio bounds q01[i] = -0.5 - 0.1 i, q99[i] = 0.7 + 0.2 i."""
    if declared:
        return True, "declared by --random-weights"
    for key, entry in stats.items():
        proprio = entry.get("proprio") if isinstance(entry, dict) else None
        if not proprio or "q01" not in proprio or "q99" not in proprio:
            continue
        n = len(proprio["q01"])
        if (np.allclose(proprio["q01"], [-0.5 - 0.1 * i for i in range(n)])
                and np.allclose(proprio["q99"], [0.7 + 0.2 * i for i in range(n)])):
            return True, (f"dataset_statistics.json[{key!r}] holds scripts/make_checkpoint.py's synthetic proprio "
                          "bounds (a make_checkpoint / scripts/demo checkpoint: random weights)")
    return False, "not detected as random (no make_checkpoint.py signature, no --random-weights)"


def cpu_info():
    model, flags = platform.processor() or "unknown", set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name") and model in ("unknown", "", "x86_64"):
                    model = line.split(":", 1)[1].strip()
                elif line.startswith("flags") and not flags:
                    flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    wanted = ["avx2", "avx512f", "avx512_vnni", "avx512_bf16", "avx512_fp16", "avx_vnni", "amx_tile", "amx_bf16",
              "amx_int8"]
    have = [f for f in wanted if f in flags]
    klass = ("Sapphire Rapids class (AMX-BF16/INT8)" if "amx_bf16" in flags else
             "AVX512-BF16" if "avx512_bf16" in flags else "AVX512" if "avx512f" in flags else
             "AVX2" if "avx2" in flags else "baseline x86-64" if flags else "unknown")
    return {"model": model, "class": klass, "flags": have, "logical_cpus": os.cpu_count()}


# ---------------------------------------------------------------------------------------------

class Progress:
    """tqdm when the venv has it, else a line on stderr."""

    def __init__(self, total, disable):
        self.bar, self.n, self.total, self.disable, self.last = None, 0, total, disable, 0.0
        if disable:
            return
        try:
            from tqdm import tqdm
            self.bar = tqdm(total=total, unit="step", dynamic_ncols=True, file=sys.stderr, smoothing=0.1)
        except ImportError:
            pass

    def update(self, n, desc):
        self.n += n
        if self.disable:
            return
        if self.bar is not None:
            self.bar.set_description(desc, refresh=False)
            self.bar.update(n)
        elif time.monotonic() - self.last > 2 or self.n >= self.total:
            self.last = time.monotonic()
            print(f"\r{desc} {self.n}/{self.total} steps ({100 * self.n / max(self.total, 1):.0f}%)", end="",
                  file=sys.stderr, flush=True)

    def write(self, line):
        if self.bar is not None:
            self.bar.write(line, file=sys.stderr)
        else:
            print(("\n" if not self.disable else "") + line, file=sys.stderr, flush=True)

    def close(self):
        if self.bar is not None:
            self.bar.close()
        elif not self.disable:
            print(file=sys.stderr)


def run_episode(env, initial_state, policy, task, args, max_steps, progress, label):
    """run_libero_eval.run_episode, timed."""
    t_start = time.perf_counter()
    env.reset()
    obs = env.set_init_state(initial_state)
    reset_s = time.perf_counter() - t_start
    queue = deque(maxlen=CHUNK)
    t, policy_steps, success, error = 0, 0, False, None
    act_ms, step_ms, prep_ms, grippers, first_chunk = [], [], [], set(), None
    total = max_steps + args.num_steps_wait
    try:
        while t < total:
            if t < args.num_steps_wait:
                s0 = time.perf_counter()
                obs, _, _, _ = env.step(DUMMY_ACTION)
                step_ms.append(1e3 * (time.perf_counter() - s0))
                t += 1
                progress.update(1, label)
                continue
            p0 = time.perf_counter()
            images, state = observation(obs)
            prep_ms.append(1e3 * (time.perf_counter() - p0))
            if not queue:
                a0 = time.perf_counter()
                chunk = np.asarray(policy.act(images, task, state))
                act_ms.append(1e3 * (time.perf_counter() - a0))
                if chunk.ndim != 2 or chunk.shape[0] < CHUNK or not np.all(np.isfinite(chunk)):
                    raise RuntimeError(f"{policy.name} returned a chunk of shape {chunk.shape} "
                                       f"(finite: {bool(np.all(np.isfinite(chunk)))})")
                if first_chunk is None:
                    first_chunk = chunk[:CHUNK].tolist()
                queue.extend(chunk[:CHUNK])
            action = process_action(queue.popleft())
            grippers.add(float(action[-1]))
            s0 = time.perf_counter()
            obs, _, done, _ = env.step(action.tolist())
            step_ms.append(1e3 * (time.perf_counter() - s0))
            policy_steps += 1
            progress.update(1, label)
            if done:
                success = True
                break
            t += 1
    except Exception as e:  # the reference logs an episode error and counts a failure
        error = f"{type(e).__name__}: {e}"
    progress.update(max(total - len(step_ms), 0), label)  # the steps a success or an error left out
    return {
        "success": success, "policy_steps": policy_steps, "env_steps": len(step_ms), "acts": len(act_ms),
        "wall_s": time.perf_counter() - t_start, "reset_s": reset_s, "act_ms": act_ms, "step_ms": step_ms,
        "prep_ms": prep_ms, "gripper_values": sorted(grippers), "error": error, "first_chunk": first_chunk,
        "load_avg_1m_after": round(os.getloadavg()[0], 2),  # other work on the machine slows the acts
    }


def full_length_s(reset_s, step_ms, prep_ms, act_ms, steps, num_steps_wait):
    """A failing episode (every episode of random weights) of `steps` policy steps: reset, the settle
    steps and the policy steps at the mean sim step, the observation prep per step, ceil(steps / 8) acts."""
    return (reset_s + (num_steps_wait + steps) * step_ms / 1e3 + steps * prep_ms / 1e3
            + math.ceil(steps / CHUNK) * act_ms / 1e3)


def summarize(name, episodes, describe, full_steps, num_steps_wait, env_build_s):
    act = np.concatenate([e["act_ms"] for e in episodes]) if episodes else np.zeros(0)
    step = np.concatenate([e["step_ms"] for e in episodes]) if episodes else np.zeros(0)
    prep = np.concatenate([e["prep_ms"] for e in episodes]) if episodes else np.zeros(0)
    wall = sum(e["wall_s"] for e in episodes)
    env_steps = int(sum(e["env_steps"] for e in episodes))
    successes = sum(e["success"] for e in episodes)
    n = len(episodes)

    def pct(a, q):
        return float(np.percentile(a, q)) if len(a) else float("nan")

    act_mean = float(act.mean()) if len(act) else float("nan")
    step_mean = float(step.mean()) if len(step) else float("nan")
    prep_mean = float(prep.mean()) if len(prep) else 0.0
    reset_mean = float(np.mean([e["reset_s"] for e in episodes])) if episodes else float("nan")
    full_s = full_length_s(reset_mean, step_mean, prep_mean, act_mean, full_steps, num_steps_wait)
    return {
        "policy": name, "settings": describe,
        "episodes": n, "successes": int(successes), "success_rate": successes / n if n else float("nan"),
        "policy_steps": int(sum(e["policy_steps"] for e in episodes)), "env_steps": env_steps,
        "acts": int(len(act)), "errors": [e["error"] for e in episodes if e["error"]],
        "wall_s": wall,
        "steps_per_s": env_steps / wall if wall else float("nan"),
        "act_ms_p50": pct(act, 50), "act_ms_p99": pct(act, 99), "act_ms_mean": act_mean,
        "act_ms_first": float(act[0]) if len(act) else float("nan"),
        "sim_step_ms_mean": step_mean, "sim_step_ms_p50": pct(step, 50), "obs_prep_ms_mean": prep_mean,
        "reset_s_mean": reset_mean,
        "episode_s_mean": wall / n if n else float("nan"),
        "episodes_per_hour_measured": 3600 * n / wall if wall else float("nan"),
        "env_build_s_per_task": env_build_s,
        "full_length_episode_s": full_s,
        "episodes_per_hour_full_length": 3600 / full_s if full_s > 0 else float("nan"),
        "per_episode": [{k: (round(v, 3) if isinstance(v, float) else v) for k, v in e.items()
                         if k not in ("act_ms", "step_ms", "prep_ms", "first_chunk")} | {"act_ms": [round(x, 1) for x in e["act_ms"]]}
                        for e in episodes],
    }


def table(report):
    rows = [("episodes", "episodes", "{:d}"), ("successes", "successes", "{:d}"),
            ("success rate", "success_rate", "{:.1%}"), ("env steps (incl. wait)", "env_steps", "{:d}"),
            ("acts", "acts", "{:d}"), ("steps / s", "steps_per_s", "{:.3f}"),
            ("act p50 (ms)", "act_ms_p50", "{:.0f}"), ("act p99 (ms)", "act_ms_p99", "{:.0f}"),
            ("act first (ms)", "act_ms_first", "{:.0f}"),
            ("sim step mean (ms)", "sim_step_ms_mean", "{:.0f}"), ("episode mean (s)", "episode_s_mean", "{:.1f}"),
            ("episodes / hour (measured)", "episodes_per_hour_measured", "{:.1f}"),
            (f"full {report['full_length_steps']}-step episode (s)", "full_length_episode_s", "{:.1f}"),
            ("episodes / hour (full length)", "episodes_per_hour_full_length", "{:.1f}")]
    names = list(report["policies"])
    out = [f"{'':32s}" + "".join(f"{n:>16s}" for n in names)]
    for label, key, fmt in rows:
        cells = []
        for n in names:
            v = report["policies"][n][key]
            cells.append(f"{fmt.format(v) if v == v else 'n/a':>16s}")
        out.append(f"{label:32s}" + "".join(cells))
    return "\n".join(out)


def main(argv=None):
    p = argparse.ArgumentParser(prog="eval_libero", description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", required=True, help="checkpoint directory (VLA-Adapter release layout)")
    p.add_argument("--suite", default="libero_spatial", help=f"one of {', '.join(SUITES)}")
    p.add_argument("--episodes", type=int, default=None,
                   help="total episodes, spread over the tasks (task i gets episodes i, i+ntasks, ...); "
                        "default: --episodes-per-task for each task")
    p.add_argument("--tasks", type=int, nargs="*", default=None, help="task ids (default: every task of the suite)")
    p.add_argument("--episodes-per-task", type=int, default=1)
    p.add_argument("--max-steps", type=int, default=None, help="policy steps per episode (default: the suite's "
                   "TASK_MAX_STEPS of run_libero_eval.py: " + ", ".join(f"{k} {v}" for k, v in TASK_MAX_STEPS.items()) + ")")
    p.add_argument("--num-steps-wait", type=int, default=10, help="dummy-action steps first (the reference's 10)")
    p.add_argument("--policy", choices=["focusvla", "reference", "both"], default="focusvla")
    p.add_argument("--dtype", choices=["auto", "bf16", "f32"], default="auto",
                   help="auto: focusvla's choice (the checkpoint's bf16 on a CPU with native bf16), which the "
                        "reference then uses too")
    p.add_argument("--quantize", choices=["none", "int8"], default="none", help="focusvla only")
    p.add_argument("--threads", type=int, default=0, help="CPU threads (0: LibTorch's / PyTorch's default)")
    p.add_argument("--unnorm-key", default="", help="default: <suite>_no_noops (or <suite>) from the checkpoint")
    p.add_argument("--seed", type=int, default=7, help="set_seed_everywhere (the reference's 7)")
    p.add_argument("--random-weights", action="store_true", help="declare the weights random (a checkpoint "
                   "from scripts/make_checkpoint.py is detected without it)")
    p.add_argument("--out", default="", help="write the JSON report here")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)

    # User mistakes first, before any heavy import.
    if args.suite not in TASK_MAX_STEPS:
        fail(f"unknown suite {args.suite!r}: one of {', '.join(SUITES)}")
    if not os.path.isdir(args.checkpoint):
        fail(f"checkpoint directory not found: {args.checkpoint}")
    if not os.path.isfile(os.path.join(args.checkpoint, "config.json")):
        fail(f"{args.checkpoint} is not a checkpoint directory (no config.json)")
    for name, v in (("--episodes", args.episodes), ("--episodes-per-task", args.episodes_per_task),
                    ("--max-steps", args.max_steps)):
        if v is not None and v < 1:
            fail(f"{name} must be at least 1 (got {v})")
    if args.num_steps_wait < 0 or args.threads < 0:
        fail("--num-steps-wait and --threads must be >= 0")
    if args.quantize != "none" and args.policy == "reference":
        fail("--quantize applies to focusvla only (the reference runs the checkpoint's weights)")
    stats = read_norm_stats(args.checkpoint)
    unnorm_key = pick_unnorm_key(stats, args.suite, args.unnorm_key)
    is_random, random_why = random_weights(args.checkpoint, stats, args.random_weights)
    max_steps = args.max_steps or TASK_MAX_STEPS[args.suite]
    if args.out:
        out_dir = os.path.dirname(os.path.abspath(args.out))
        if not os.path.isdir(out_dir):
            fail(f"--out: directory {out_dir} does not exist")

    resizer = None
    if args.policy in ("reference", "both"):
        # TensorFlow (the reference's resize_image_for_policy) and MuJoCo's EGL rendering do not live in
        # one process here (each order crashes in one of them), so the reference's resize runs in a
        # worker process started before MuJoCo is loaded; its round trip is in the reference's act time.
        resizer = TFResizer()
    try:
        from libero.libero import benchmark, get_libero_path
        from libero.libero.envs import OffScreenRenderEnv
    except ImportError as e:
        fail(f"LIBERO is not importable ({e}): run through scripts/eval_libero (it uses .venv-sim; "
             "scripts/setup_sim builds it)")
    suite = benchmark.get_benchmark_dict()[args.suite]()
    task_ids = args.tasks if args.tasks else list(range(suite.n_tasks))
    bad = [t for t in task_ids if not 0 <= t < suite.n_tasks]
    if bad:
        fail(f"--tasks {bad}: {args.suite} has tasks 0..{suite.n_tasks - 1}")
    if args.episodes is not None:
        plan = {t: [] for t in task_ids}
        for i in range(args.episodes):
            plan[task_ids[i % len(task_ids)]].append(i // len(task_ids))
    else:
        plan = {t: list(range(args.episodes_per_task)) for t in task_ids}
    plan = {t: eps for t, eps in plan.items() if eps}

    # set_seed_everywhere
    import random
    random.seed(args.seed)
    np.random.seed(args.seed)
    try:
        import torch
        torch.manual_seed(args.seed)
        if args.threads:
            torch.set_num_threads(args.threads)
        torch_threads = torch.get_num_threads()
    except ImportError:
        torch_threads = None

    load_avg_before = os.getloadavg()
    policies, load_s = [], {}
    if args.policy in ("focusvla", "both"):
        t0 = time.perf_counter()
        policies.append(FocusVLA(args, unnorm_key))
        load_s["focusvla"] = time.perf_counter() - t0
    if args.policy in ("reference", "both"):
        if args.dtype != "auto":
            ref_dtype = args.dtype
        elif policies:
            ref_dtype = "bf16" if "bf" in policies[0].dtype.lower() else "f32"
        else:
            ref_dtype = "bf16" if "avx512_bf16" in cpu_info()["flags"] or "amx_bf16" in cpu_info()["flags"] else "f32"
        t0 = time.perf_counter()
        policies.append(Reference(args, unnorm_key, ref_dtype, resizer))
        load_s["reference"] = time.perf_counter() - t0

    runs = sum(len(e) for e in plan.values()) * len(policies)
    banner = (f"eval_libero: {args.suite}, {sum(len(e) for e in plan.values())} episodes x {len(policies)} "
              f"polic{'y' if len(policies) == 1 else 'ies'}, max {max_steps} steps (+{args.num_steps_wait} wait), "
              f"unnorm key {unnorm_key}")
    print(banner, file=sys.stderr)
    if is_random:
        print("eval_libero: RANDOM WEIGHTS: success is 0% by construction; read the throughput", file=sys.stderr)
    progress = Progress(runs * (max_steps + args.num_steps_wait), args.no_progress)
    results = {pol.name: [] for pol in policies}
    env_build = {pol.name: [] for pol in policies}
    t_all = time.perf_counter()
    try:
        for task_id, episode_ids in plan.items():
            task = suite.get_task(task_id)
            initial_states = suite.get_task_init_states(task_id)
            b0 = time.perf_counter()
            env = OffScreenRenderEnv(bddl_file_name=os.path.join(get_libero_path("bddl_files"), task.problem_folder,
                                                                 task.bddl_file),
                                     camera_heights=ENV_RESOLUTION, camera_widths=ENV_RESOLUTION)
            env.seed(0)  # get_libero_env: "seed seems to affect object positions even when using fixed initial state"
            build_s = time.perf_counter() - b0
            try:
                for ep in episode_ids:
                    if ep >= len(initial_states):
                        progress.write(f"task {task_id}: no initial state {ep} (it has {len(initial_states)}); skipped")
                        progress.update(len(policies) * (max_steps + args.num_steps_wait), "skip")
                        continue
                    for pol in policies:
                        env_build[pol.name].append(build_s)
                        label = f"{pol.name} t{task_id} e{ep}"
                        r = run_episode(env, initial_states[ep], pol, task.language, args, max_steps, progress, label)
                        r.update(task_id=task_id, episode=ep)
                        results[pol.name].append(r)
                        progress.write(
                            f"{pol.name:9s} task {task_id} ep {ep}: {'success' if r['success'] else 'failure'} after "
                            f"{r['policy_steps']} steps, {r['wall_s']:.1f} s, act p50 "
                            f"{np.median(r['act_ms']) if r['act_ms'] else float('nan'):.0f} ms, sim step "
                            f"{np.mean(r['step_ms']):.0f} ms" + (f"  [{r['error']}]" if r["error"] else ""))
            finally:
                env.close()
    except KeyboardInterrupt:
        progress.write("eval_libero: interrupted; reporting the finished episodes")
    finally:
        progress.close()
        for pol in policies:
            if hasattr(pol, "close"):
                pol.close()
    total_wall = time.perf_counter() - t_all
    load_avg_after = os.getloadavg()

    report = {
        "suite": args.suite, "checkpoint": os.path.abspath(args.checkpoint), "unnorm_key": unnorm_key,
        "max_steps": max_steps, "full_length_steps": TASK_MAX_STEPS[args.suite], "num_steps_wait": args.num_steps_wait, "chunk": CHUNK, "seed": args.seed,
        "tasks": {str(t): e for t, e in plan.items()},
        "weights": {"random": is_random, "why": random_why,
                    "note": ("RANDOM WEIGHTS: success is 0% by construction and measures nothing about the library; "
                             "the throughput (steps/s, act latency, episodes/hour) is the result") if is_random else
                            "success rate is meaningful only for trained weights"},
        "machine": {"cpu": cpu_info(), "torch_threads": torch_threads, "threads_arg": args.threads,
                    "load_avg_before": [round(x, 2) for x in load_avg_before],
                    "load_avg_after": [round(x, 2) for x in load_avg_after], "python": platform.python_version()},
        "load_s": {k: round(v, 2) for k, v in load_s.items()},
        "wall_s": round(total_wall, 2),
        "extrapolation": (f"full_length_episode_s: a failing episode of the suite's {TASK_MAX_STEPS[args.suite]} "
                          "steps (every episode with random weights) from this run's means: reset + (num_steps_wait + "
                          "steps) x sim step + steps x observation prep + ceil(steps / 8) x act"),
        "policies": {pol.name: summarize(pol.name, results[pol.name], pol.describe, TASK_MAX_STEPS[args.suite],
                                         args.num_steps_wait,
                                         env_build[pol.name][0] if env_build[pol.name] else float("nan"))
                     for pol in policies},
    }
    if "focusvla" in results and "reference" in results:
        # The first observation of an episode is the same for both (same initial state, same settle
        # steps): their first chunks, side by side (bf16 / int8 differ within rounding).
        diffs = [float(np.max(np.abs(np.subtract(f["first_chunk"], r["first_chunk"]))))
                 for f, r in zip(results["focusvla"], results["reference"]) if f["first_chunk"] and r["first_chunk"]]
        report["first_chunk_max_abs_diff"] = diffs
    cpu = report["machine"]["cpu"]
    print(f"\nLIBERO {args.suite}: {os.path.abspath(args.checkpoint)} (unnorm key {unnorm_key})")
    print(f"CPU: {cpu['model']}, {cpu['class']}, {cpu['logical_cpus']} logical CPUs; flags {' '.join(cpu['flags'])}")
    print(f"threads {torch_threads}; dtype " + ", ".join(f"{n} {pol.dtype}" for n, pol in zip(results, policies))
          + (f"; focusvla quantize {args.quantize}" if args.quantize != "none" else "")
          + f"; load average {report['machine']['load_avg_before']} -> {report['machine']['load_avg_after']}")
    print(f"max steps {max_steps} (+{args.num_steps_wait} wait), chunk {CHUNK} open loop; load "
          + ", ".join(f"{k} {v:.1f} s" for k, v in load_s.items()))
    print("WEIGHTS: " + report["weights"]["note"] + f" ({random_why})")
    print(table(report))
    if report.get("first_chunk_max_abs_diff"):
        print("first chunk, focusvla vs reference (same observation), max |diff| per episode: "
              + ", ".join(f"{d:.2e}" for d in report["first_chunk_max_abs_diff"]))
    print("full length: " + report["extrapolation"])
    if args.out:
        with open(args.out, "w") as f:
            json.dump(report, f, indent=1, default=float)
        print(f"report: {args.out}")
    errors = [e for pol in report["policies"].values() for e in pol["errors"]]
    if errors:
        print(f"eval_libero: {len(errors)} episode(s) ended with an error, first: {errors[0]}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except UsageError as e:
        print(f"eval_libero: error: {e}", file=sys.stderr)
        sys.exit(2)
