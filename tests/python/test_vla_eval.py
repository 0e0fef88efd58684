"""ctest vla_eval: focusvla.vla_eval.FocusVLAModelServer behind vla-eval's own websocket server
(serve_async), driven by vla-eval's own client (vla_eval.connection.Connection), without a simulator:
observations shaped as vla-eval's LIBERO benchmark sends them.

Checks: the HELLO reply (what the benchmark is asked to send), actions == focusvla.Policy.act + the
reference's gripper transform, the 8-step open loop (one query per chunk, the chunk's rows in order,
a new query after 8), batching across sessions (== per-sample act), the named errors through vla-eval's
error channel with the connection and server alive after each, and episode messages out of order.
Run by tests/python/run_vla_eval.sh (FOCUSVLA_TEST_DATA: the test checkpoints)."""

import os

import anyio
import numpy as np
import pytest

import focusvla
from focusvla.vla_eval import FocusVLAModelServer, libero_gripper
from vla_eval.connection import Connection
from vla_eval.model_servers.serve import serve_async
from vla_eval.protocol.messages import MessageType

CKPT = os.path.join(os.environ.get("FOCUSVLA_TEST_DATA", "build/test_data"), "policy", "focus_f32")
UNNORM = "libero_spatial_no_noops"
TASK = "pick up the black bowl between the plate and the ramekin and place it on the plate"


@pytest.fixture(scope="module")
def policy():
    if not os.path.isdir(CKPT):
        pytest.skip(f"no test checkpoint at {CKPT}")
    return focusvla.Policy.load(CKPT, unnorm_key=UNNORM, threads=1)


def libero_obs(step, size=256, seed=0):
    """An observation as vla-eval's LIBERO benchmark sends it (send_wrist_image, send_state)."""
    rng = np.random.default_rng(seed * 1000 + step)
    return {
        "images": {"agentview": rng.integers(0, 256, (size, size, 3), dtype=np.uint8),
                   "wrist": rng.integers(0, 256, (size, size, 3), dtype=np.uint8)},
        "task_description": TASK,
        "states": rng.normal(0, 0.3, 8).astype(np.float64),
        "controller_states": np.zeros(8, dtype=np.float32),
    }


def reference(policy, obs):
    """What the reference's LIBERO eval would execute for this observation's query: act, then
    normalize_gripper_action(binarize=True) and invert_gripper_action, row by row."""
    chunk = policy.act([obs["images"]["agentview"], obs["images"]["wrist"]], obs["task_description"],
                       obs["states"])
    return libero_gripper(chunk).astype(np.float32)


def run_with_server(server, body):
    """Starts vla-eval's serve_async(server) on a free loopback port, runs body(url), stops it."""
    out = {}

    async def main():
        async with anyio.create_task_group() as tg:
            port = await tg.start(serve_async, server, "127.0.0.1", 0)
            try:
                out["result"] = await body(f"ws://127.0.0.1:{port}")
            finally:
                tg.cancel_scope.cancel()

    anyio.run(main)
    return out["result"]


async def expect_error(conn, obs):
    seq = await conn.send(MessageType.OBSERVATION, obs)
    reply = await conn.recv(timeout=60)
    assert reply.type == MessageType.ERROR, reply
    assert reply.seq == seq
    return reply.payload["error"]


def test_libero_gripper_matches_reference_functions():
    # normalize_gripper_action(binarize=True): 2x - 1 then sign; invert_gripper_action: * -1
    a = np.array([[0.1, 0.2, 0.3, 0.0, 0.0, 0.0, g] for g in (-0.7, 0.0, 0.2, 0.5, 0.51, 0.9, 1.0)])
    out = libero_gripper(a)
    np.testing.assert_array_equal(out[:, :6], a[:, :6])
    np.testing.assert_array_equal(out[:, 6], [1, 1, 1, 0, -1, -1, -1])  # 0 = close -> +1 (robosuite close)
    assert a[0, 6] == -0.7  # a copy


def test_hello_actions_open_loop(policy):
    server = FocusVLAModelServer(CKPT, policy=policy)
    assert server.chunk_size == 8 and server.image_keys == ["agentview", "wrist"] and server.state_dim == 8

    async def body(url):
        async with Connection(url, timeout=120) as conn:
            await conn.connect(benchmark="libero_spatial")
            info = conn.server_info
            assert info["model_server"] == "FocusVLAModelServer"
            assert info["observation_params"] == {"env_seed": 0, "quat_no_antipodal": True,
                                                  "send_wrist_image": True, "send_state": True}
            assert set(info["action_spec"]) == {"position", "rotation", "gripper"}
            await conn.start_episode({"task": {"name": TASK}})
            got = [np.asarray((await conn.act(libero_obs(t)))["actions"]) for t in range(17)]
            await conn.end_episode({"success": False})
            return got

    got = run_with_server(server, body)
    assert all(a.shape == (7,) and a.dtype == np.float32 for a in got)
    # Open loop: the first chunk comes from step 0's observation, the second from step 8's, the
    # third from step 16's; the steps between are served from the chunk without a query.
    for start in (0, 8, 16):
        want = reference(policy, libero_obs(start))
        for k in range(start, min(start + 8, 17)):
            np.testing.assert_array_equal(got[k], want[k - start], err_msg=f"step {k}")
    assert server.counters["queries"] == 3 and server.counters["observations"] == 17
    assert set(np.unique(np.stack(got)[:, 6])) <= {-1.0, 0.0, 1.0}
    # A different observation at an open-loop step does not change the action: it is not queried.
    assert not np.array_equal(reference(policy, libero_obs(3))[0], got[3])


def test_new_episode_resets_the_chunk(policy):
    server = FocusVLAModelServer(CKPT, policy=policy, chunk_size=8)

    async def body(url):
        async with Connection(url, timeout=120) as conn:
            await conn.connect()
            await conn.start_episode({})
            first = [np.asarray((await conn.act(libero_obs(t)))["actions"]) for t in range(3)]
            await conn.end_episode({})
            await conn.start_episode({})  # a fresh episode queries at once, the old chunk is dropped
            second = np.asarray((await conn.act(libero_obs(5, seed=1)))["actions"])
            await conn.end_episode({})
            return first, second

    first, second = run_with_server(server, body)
    np.testing.assert_array_equal(second, reference(policy, libero_obs(5, seed=1))[0])
    assert server.counters["queries"] == 2


def test_named_errors_keep_the_server_alive(policy):
    server = FocusVLAModelServer(CKPT, policy=policy)

    def without_wrist():
        o = libero_obs(0)
        del o["images"]["wrist"]
        return o

    def small():
        return libero_obs(0, size=128)

    def nan_state():
        o = libero_obs(0)
        o["states"][4] = np.nan
        return o

    def short_state():
        o = libero_obs(0)
        o["states"] = o["states"][:7]
        return o

    def no_state():
        o = libero_obs(0)
        del o["states"]
        return o

    def gray():
        o = libero_obs(0)
        o["images"]["agentview"] = o["images"]["agentview"][:, :, 0].copy()
        return o

    def float_image():
        o = libero_obs(0)
        o["images"]["wrist"] = o["images"]["wrist"].astype(np.float32)
        return o

    def no_task():
        o = libero_obs(0)
        o["task_description"] = ""
        return o

    cases = [
        (without_wrist, "MissingCameraError: images: no 'wrist' camera (sent: ['agentview']"),
        (small, "ImageError: images['agentview']: 128x128, expected 256x256"),
        (nan_state, "StateError: states: value 4 is nan (not finite)"),
        (short_state, "StateError: states: 7 values, expected 8"),
        (no_state, "StateError: states: missing"),
        (gray, "ImageError: images['agentview']: shape (256, 256) uint8, expected HxWx3 uint8"),
        (float_image, "ImageError: images['wrist']: shape (256, 256, 3) float32"),
        (no_task, "InstructionError: task_description: ''"),
    ]

    async def body(url):
        errors = []
        async with Connection(url, timeout=120) as conn:
            await conn.connect()
            # An observation before EPISODE_START.
            errors.append(("order", await expect_error(conn, libero_obs(0))))
            await conn.start_episode({})
            for make, _ in cases:
                errors.append((make.__name__, await expect_error(conn, make())))
                # The connection and the episode go on: a good observation is answered.
                ok = await conn.act(libero_obs(0))
                assert np.asarray(ok["actions"]).shape == (7,)
            # EPISODE_START inside the running episode: reported, the new episode starts.
            await conn.start_episode({})
            reply = await conn.recv(timeout=60)
            assert reply.type == MessageType.ERROR
            errors.append(("restart", reply.payload["error"]))
            fresh = await conn.act(libero_obs(2, seed=3))
            await conn.end_episode({})
            # After EPISODE_END: refused, named.
            errors.append(("after_end", await expect_error(conn, libero_obs(0))))
        # A second connection after all that: the server is alive.
        async with Connection(url, timeout=120) as conn:
            await conn.connect()
            await conn.start_episode({})
            again = await conn.act(libero_obs(0))
            await conn.end_episode({})
        return errors, fresh, again

    errors, fresh, again = run_with_server(server, body)
    by_name = dict(errors)
    assert by_name["order"].startswith("observation_failed: EpisodeOrderError: observation outside an episode")
    assert "no episode started" in by_name["order"]
    for make, want in cases:
        assert by_name[make.__name__].startswith("observation_failed: " + want), (make.__name__, by_name[make.__name__])
    assert by_name["restart"].startswith("episode_start_failed: EpisodeOrderError: EPISODE_START inside episode")
    assert by_name["after_end"].startswith("observation_failed: EpisodeOrderError:")
    np.testing.assert_array_equal(np.asarray(fresh["actions"]), reference(policy, libero_obs(2, seed=3))[0])
    np.testing.assert_array_equal(np.asarray(again["actions"]), reference(policy, libero_obs(0))[0])


def test_batched_sessions(policy):
    """Three vla-eval shards at once with max_batch_size 4: each gets its own observation's chunk
    (act_batch == act within rounding), and one shard's bad observations fail only that shard."""
    server = FocusVLAModelServer(CKPT, policy=policy, max_batch_size=4, max_wait_time=0.2)

    async def shard(url, seed, out, bad):
        async with Connection(url, timeout=300) as conn:
            await conn.connect()
            await conn.start_episode({})
            acts = []
            for t in range(10):
                if bad and t == 1:
                    o = libero_obs(t, seed=seed)
                    o["states"][0] = np.inf
                    out[f"error{seed}"] = await expect_error(conn, o)
                acts.append(np.asarray((await conn.act(libero_obs(t, seed=seed)))["actions"]))
            await conn.end_episode({})
            out[seed] = acts

    async def body(url):
        out = {}
        async with anyio.create_task_group() as tg:
            for seed in range(3):
                tg.start_soon(shard, url, seed, out, seed == 1)
        return out

    out = run_with_server(server, body)
    assert out["error1"].startswith("observation_failed: StateError: states: value 0 is inf")
    for seed in range(3):
        for start in (0, 8):
            want = reference(policy, libero_obs(start, seed=seed))
            for k in range(start, min(start + 8, 10)):
                np.testing.assert_allclose(out[seed][k][:6], want[k - start][:6], rtol=0, atol=1e-4)
                assert out[seed][k][6] == want[k - start][6]
    assert server.counters["queries"] == 6


def test_model_server_config_parses():
    """examples/vla_eval/model_server.yaml through run_server's parser (jsonargparse over the
    constructor): every key is a constructor argument, overrides with --args.KEY=VALUE."""
    from jsonargparse import ActionConfigFile, ArgumentParser

    src = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
    parser = ArgumentParser()
    parser.add_argument("--config", action=ActionConfigFile)
    parser.add_argument("--script", default=None)
    parser.add_class_arguments(FocusVLAModelServer, nested_key="args", fail_untyped=False, sub_configs=True)
    cfg = parser.parse_args(["--config", os.path.join(src, "examples", "vla_eval", "model_server.yaml"),
                             "--args.checkpoint=/ckpt", "--args.max_batch_size=4"])
    args = cfg.args.as_dict()
    assert args["checkpoint"] == "/ckpt" and args["max_batch_size"] == 4 and args["chunk_size"] == 8
    assert args["gripper"] == "libero" and args["image_keys"] == ["agentview", "wrist"]
    for suite in ("libero_spatial", "libero_object", "libero_goal", "libero_10"):
        import yaml

        with open(os.path.join(src, "examples", "vla_eval", f"{suite}.yaml")) as f:
            c = yaml.safe_load(f)
        (b,) = c["benchmarks"]
        assert b["params"]["suite"] == suite and b["params"]["seed"] == 7 and b["episodes_per_task"] == 50
