"""A LIBERO client loop against `focusvla serve`, in the shape of openpi's LIBERO example
(openpi's examples/libero/main.py): openpi-client's WebsocketClientPolicy, the frames rotated 180
degrees and resized with padding to 224 (image_tools.resize_with_pad), the 8-dim state (eef pos,
axis-angle, gripper qpos), a new action chunk every --replan-steps (5) steps.

focusvla serve returns the policy's un-normalized chunk; the loop executes it as the reference's
LIBERO eval does (--gripper libero: normalize_gripper_action(binarize=True) + invert_gripper_action).
Note: the frames reach the server already 224x224, so the server's reference resize (JPEG round trip
+ Lanczos of 256x256 frames, which the vla-eval path keeps) is not used here: openpi's way.

    focusvla serve --checkpoint DIR --unnorm-key libero_spatial_no_noops --port 8000 &
    LIBERO_CONFIG_PATH=.venv-sim/libero-config MUJOCO_GL=egl .venv-sim/bin/python \\
        examples/libero/openpi_loop.py --suite libero_spatial --episodes 50 --out results/openpi_loop.json

Runs in .venv-sim (scripts/setup_sim). Writes a JSON summary: per episode the task, success, steps,
and the time per environment step and per query.
"""

import argparse
import collections
import json
import math
import os
import time

import numpy as np

LIBERO_DUMMY_ACTION = [0.0] * 6 + [-1.0]
LIBERO_ENV_RESOLUTION = 256  # the resolution of the training data's renders
MAX_STEPS = {"libero_spatial": 220, "libero_object": 280, "libero_goal": 300, "libero_10": 520, "libero_90": 400}


def quat2axisangle(quat):
    """robosuite's quat2axisangle (x, y, z, w), as openpi's example copies it."""
    quat = np.array(quat, dtype=np.float64)
    quat[3] = min(max(quat[3], -1.0), 1.0)
    den = np.sqrt(1.0 - quat[3] * quat[3])
    if math.isclose(den, 0.0):
        return np.zeros(3)
    return (quat[:3] * 2.0 * math.acos(quat[3])) / den


def libero_gripper(action):
    """normalize_gripper_action(binarize=True) then invert_gripper_action (the reference's)."""
    a = np.array(action, dtype=np.float64)
    a[-1] = -np.sign(2.0 * a[-1] - 1.0)
    return a


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--suite", default="libero_spatial", choices=sorted(MAX_STEPS))
    p.add_argument("--task-ids", type=int, nargs="*", default=None, help="default: every task of the suite")
    p.add_argument("--episodes", type=int, default=50, help="episodes per task")
    p.add_argument("--max-steps", type=int, default=None, help="default: the suite's (openpi's numbers)")
    p.add_argument("--num-steps-wait", type=int, default=10)
    p.add_argument("--replan-steps", type=int, default=5)
    p.add_argument("--resize", type=int, default=224)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--gripper", choices=["libero", "raw"], default="libero")
    p.add_argument("--out", default="openpi_loop.json")
    a = p.parse_args(argv)

    from libero.libero import benchmark, get_libero_path
    from libero.libero.envs import OffScreenRenderEnv
    from openpi_client import image_tools
    from openpi_client import websocket_client_policy as _websocket_client_policy

    np.random.seed(a.seed)
    client = _websocket_client_policy.WebsocketClientPolicy(a.host, a.port)
    suite = benchmark.get_benchmark_dict()[a.suite]()
    max_steps = a.max_steps if a.max_steps is not None else MAX_STEPS[a.suite]
    task_ids = a.task_ids if a.task_ids is not None else list(range(suite.n_tasks))
    episodes = []
    for task_id in task_ids:
        task = suite.get_task(task_id)
        initial_states = suite.get_task_init_states(task_id)
        t0 = time.perf_counter()
        env = OffScreenRenderEnv(bddl_file_name=os.path.join(get_libero_path("bddl_files"), task.problem_folder,
                                                             task.bddl_file),
                                 camera_heights=LIBERO_ENV_RESOLUTION, camera_widths=LIBERO_ENV_RESOLUTION)
        env.seed(a.seed)
        env_build_s = time.perf_counter() - t0
        for ep in range(min(a.episodes, len(initial_states))):
            env.reset()
            obs = env.set_init_state(initial_states[ep])
            action_plan = collections.deque()
            success, t, queries, infer_s, step_s, policy_steps = False, 0, 0, 0.0, 0.0, 0
            grippers = []
            while t < max_steps + a.num_steps_wait:
                if t < a.num_steps_wait:  # let the objects settle
                    obs, _, _, _ = env.step(LIBERO_DUMMY_ACTION)
                    t += 1
                    continue
                img = np.ascontiguousarray(obs["agentview_image"][::-1, ::-1])  # 180 degrees
                wrist = np.ascontiguousarray(obs["robot0_eye_in_hand_image"][::-1, ::-1])
                img = image_tools.convert_to_uint8(image_tools.resize_with_pad(img, a.resize, a.resize))
                wrist = image_tools.convert_to_uint8(image_tools.resize_with_pad(wrist, a.resize, a.resize))
                if not action_plan:
                    element = {
                        "observation/image": img,
                        "observation/wrist_image": wrist,
                        "observation/state": np.concatenate(
                            (obs["robot0_eef_pos"], quat2axisangle(obs["robot0_eef_quat"]), obs["robot0_gripper_qpos"])),
                        "prompt": str(task.language),
                    }
                    q0 = time.perf_counter()
                    chunk = np.asarray(client.infer(element)["actions"])
                    infer_s += time.perf_counter() - q0
                    queries += 1
                    assert len(chunk) >= a.replan_steps, f"chunk of {len(chunk)} < replan_steps {a.replan_steps}"
                    action_plan.extend(chunk[: a.replan_steps])
                action = action_plan.popleft()
                if a.gripper == "libero":
                    action = libero_gripper(action)
                grippers.append(float(action[-1]))
                s0 = time.perf_counter()
                obs, _, done, _ = env.step(action.tolist())
                step_s += time.perf_counter() - s0
                policy_steps += 1
                t += 1
                if done:
                    success = True
                    break
            episodes.append({
                "suite": a.suite, "task_id": task_id, "task": task.language, "episode": ep, "success": success,
                "steps": policy_steps, "queries": queries, "env_build_s": round(env_build_s, 3),
                "env_step_ms": round(1000 * step_s / max(policy_steps, 1), 2),
                "query_ms": round(1000 * infer_s / max(queries, 1), 2),
                "gripper_values": sorted(set(grippers)),
            })
            print(json.dumps(episodes[-1]), flush=True)
        env.close()
    summary = {"suite": a.suite, "episodes": episodes,
               "success_rate": sum(e["success"] for e in episodes) / max(len(episodes), 1),
               "server": client.get_server_metadata() if hasattr(client, "get_server_metadata") else {}}
    with open(a.out, "w") as f:
        json.dump(summary, f, indent=1, default=str)
    print(f"openpi_loop: {len(episodes)} episodes, success {summary['success_rate']:.1%} -> {a.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
