"""`focusvla serve` driven by openpi's own websocket client (openpi-client from PyPI), against
`focusvla act` on the same observations.

1. One client: metadata, server_timing, and actions exactly equal to `focusvla act` (a batch of one
   is the same computation), for the observation openpi's LIBERO example sends.
2. 16 concurrent clients x 100 requests with dynamic batching: every reply is its own
   observation's actions (within the batched-GEMM tolerance), none lost or duplicated, and the
   server really batched. 3. The same with --max-batch 1 (16 x 25 requests): exact.
4. Bad input (invalid msgpack, missing / mistyped keys, bad shapes, NaN, text frames, oversize
   frames, clients that vanish mid-request or stop reading) while two good clients keep running:
   named errors, the connection stays usable, the good clients never notice.
Operations (health, API key, signals, pings, pipelining, idle timeout, --help, other checkpoints):
test_serve_ops.py.

    run_serve.sh SOURCE_DIR BUILD_DIR TEST_DATA   (ctest serve; environment FOCUSVLA_CLI, FOCUSVLA_TEST_DATA)
"""
import concurrent.futures
import contextlib
import itertools
import math
import socket
import struct
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from openpi_client import image_tools, msgpack_numpy

sys.path.insert(0, str(Path(__file__).resolve().parent))
from serve_common import (IMAGE_KEYS, TASKS, UNNORM, relative_error,  # noqa: E402
                          smooth_image)
from serve_common import act_cli as _act_cli  # noqa: E402
from serve_process import (ACT_CLI, FOCUS, RawSocketClient, close_quietly, openpi_client,  # noqa: E402,F401
                           raw_connect, serve)


# Batched replies vs `focusvla act` (batch of one), max |got - want| / max |want|. Batched fp32 GEMMs
# round differently from batch-of-one ones; on these tiny checkpoints the difference is 1-2 float32
# ulps of the normalized action. Measured: 9.3e-8, max over the 1600 replies of
# test_concurrent_clients_batched (2-core AMD EPYC VM, LibTorch 2.11 CPU, every batch 8); 1.9e-7 for
# other batch compositions through focusvla.Policy.act_batch. Tolerance: 5x the worst seen.
BATCHED_TOLERANCE = 1e-6
# Distinct observations must be this many tolerances apart, so that a reply swapped between clients
# can never pass as its own (measured smallest pairwise distance of the 16: 6.7e-5, 67 tolerances).
DISTINCT_FACTOR = 20
K = 16  # distinct observations

# openpi-client 0.1.2 calls websockets.sync.client.connect() without a context manager, which
# websockets 15+ deprecates (it still works); so do the raw connections here.
pytestmark = pytest.mark.filterwarnings("ignore:connect\\(\\) must be used as a context manager:DeprecationWarning")



# ----------------------------------------------------------------------------------------------
# Observations and the `focusvla act` oracle


def libero_observation(rng, task):
    """The request openpi's LIBERO example (examples/libero/main.py) builds from a sim observation:
    images rotated 180 degrees, resized with padding to 224 x 224, uint8; state = eef position,
    axis-angle, gripper qpos (8 float64); prompt = the task string."""
    agentview = smooth_image(rng, 256, 256, rng.integers(40, 200))
    wrist = smooth_image(rng, 256, 256, rng.integers(40, 200))
    img = np.ascontiguousarray(agentview[::-1, ::-1])
    wrist_img = np.ascontiguousarray(wrist[::-1, ::-1])
    state = np.concatenate((rng.uniform(-0.3, 0.3, 3), rng.uniform(-3, 3, 3), rng.uniform(0, 0.04, 2)))
    return {
        "observation/image": image_tools.convert_to_uint8(image_tools.resize_with_pad(img, 224, 224)),
        "observation/wrist_image": image_tools.convert_to_uint8(image_tools.resize_with_pad(wrist_img, 224, 224)),
        "observation/state": state,
        "prompt": str(task),
    }


def act_cli(workdir, checkpoint, images, prompt, state):
    return _act_cli(ACT_CLI, workdir, checkpoint, images, prompt, state)


@pytest.fixture(scope="session")  # shared with test_serve_limits.py
def observations(tmp_path_factory):
    """K distinct observations (seeded) and `focusvla act`'s actions for each."""
    rng = np.random.default_rng(20240611)
    levels = rng.permutation(K) * 16 + 8
    obs = []
    for k in range(K):
        state = rng.uniform(-0.5, 0.5, 8)
        obs.append({
            "observation/image": smooth_image(rng, 224, 224, levels[k]),
            "observation/wrist_image": smooth_image(rng, 224, 224, levels[k]),
            # float64 and float32 states both (the LIBERO example sends float64)
            "observation/state": state if k % 2 == 0 else state.astype(np.float32),
            "prompt": TASKS[k],
        })
    work = tmp_path_factory.mktemp("act")
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        expected = list(pool.map(lambda k: act_cli(work / f"obs{k}", FOCUS, [obs[k][key] for key in IMAGE_KEYS],
                                                   obs[k]["prompt"], obs[k]["observation/state"]), range(K)))
    distances = [relative_error(expected[i], expected[j]) for i in range(K) for j in range(K) if i != j]
    print(f"smallest relative distance between the {K} observations' actions: {min(distances):.3e}")
    assert min(distances) > DISTINCT_FACTOR * BATCHED_TOLERANCE, (
        f"observations too alike to tell replies apart: {min(distances):.3e}")
    return obs, expected


# ----------------------------------------------------------------------------------------------
# 1. One client


# The server's own fields, then the policy's stage times (timing_fields in policy.h), in order.
TIMING_KEYS = ["infer_ms", "queue_ms", "decode_ms", "batch_size", "preprocess_ms", "vision_ms", "projector_ms",
               "llm_ms", "head_ms", "device_ms", "total_ms"]


def check_reply(reply, first):
    assert set(reply) >= {"actions", "server_timing"}, reply.keys()
    actions = reply["actions"]
    assert isinstance(actions, np.ndarray) and actions.dtype == np.float64 and actions.shape == (8, 7)
    timing = reply["server_timing"]
    assert list(timing)[:len(TIMING_KEYS)] == TIMING_KEYS, list(timing)
    for key in TIMING_KEYS:
        assert key in timing, f"server_timing lacks {key}: {timing}"
        assert math.isfinite(timing[key]) and timing[key] >= 0, f"server_timing {key} = {timing[key]}"
    assert timing["batch_size"] == 1
    if first:
        assert "prev_total_ms" not in timing, timing
    else:
        assert math.isfinite(timing["prev_total_ms"]) and timing["prev_total_ms"] > 0, timing
    return actions


def test_one_client_equals_act(serve, tmp_path):
    server = serve("--max-batch", 8, "--max-wait-ms", 2)
    rng = np.random.default_rng(7)
    obs = libero_observation(rng, TASKS[0])
    assert obs["observation/image"].dtype == np.uint8 and obs["observation/image"].shape == (224, 224, 3)
    client = openpi_client(server)

    meta = client.get_server_metadata()
    assert meta["server"] == "focusvla" and isinstance(meta["version"], str) and meta["version"]
    assert meta["head"] == "focusvla", meta
    assert (meta["chunk"], meta["action_dim"], meta["cameras"], meta["proprio_dim"]) == (8, 7, 2, 8), meta
    assert list(meta["image_keys"]) == IMAGE_KEYS, meta
    assert (meta["state_key"], meta["prompt_key"]) == ("observation/state", "prompt"), meta
    assert (meta["max_batch"], meta["max_wait_ms"]) == (8, 2), meta
    assert meta["max_frame_bytes"] in (8 << 20, 8_000_000), meta
    assert isinstance(meta["settings"], dict), meta
    if "unnorm_key" in meta["settings"]:
        assert meta["settings"]["unnorm_key"] == UNNORM

    images = [obs[k] for k in IMAGE_KEYS]
    want = act_cli(tmp_path / "libero", FOCUS, images, obs["prompt"], obs["observation/state"])
    got = check_reply(client.infer(obs), first=True)
    assert np.array_equal(got, want), f"relative error {relative_error(got, want):.3e}"

    # float32 state (the oracle gets the float64 values of the float32 numbers), same connection.
    obs32 = dict(obs, **{"observation/state": obs["observation/state"].astype(np.float32)})
    want32 = act_cli(tmp_path / "libero32", FOCUS, images, obs["prompt"], obs32["observation/state"])
    got32 = check_reply(client.infer(obs32), first=False)
    assert np.array_equal(got32, want32), f"relative error {relative_error(got32, want32):.3e}"

    # Unknown extra keys are ignored; nested maps ({"observation": {"image": ...}}) are found too.
    extra = dict(obs, **{"observation/extra": np.zeros(3), "episode": 4, "notes": "ignored"})
    assert np.array_equal(check_reply(client.infer(extra), first=False), want)
    nested = {"observation": {"image": obs["observation/image"], "wrist_image": obs["observation/wrist_image"],
                              "state": obs["observation/state"]}, "prompt": obs["prompt"]}
    assert np.array_equal(check_reply(client.infer(nested), first=False), want)

    # Cameras of another size (480 x 640, not resized by the client) and a capitalized task:
    # preprocessed exactly as `focusvla act` does.
    other = dict(obs, **{"observation/image": smooth_image(rng, 480, 640, 90),
                         "observation/wrist_image": smooth_image(rng, 480, 640, 160), "prompt": "Pick Up The Black Bowl"})
    want_other = act_cli(tmp_path / "other", FOCUS, [other[k] for k in IMAGE_KEYS], other["prompt"],
                         other["observation/state"])
    assert np.array_equal(check_reply(client.infer(other), first=False), want_other)
    close_quietly(client._ws)


# ----------------------------------------------------------------------------------------------
# 2, 3. Concurrent clients


def run_clients(server, obs, n_clients, n_requests, timeout_s=360):
    """n_clients threads, each its own WebsocketClientPolicy, request i of client c on observation
    (c + i) % K. -> {(c, i): (k, actions, server_timing)} and the errors."""
    replies, errors = {}, []
    lock = threading.Lock()
    clients = [openpi_client(server) for _ in range(n_clients)]  # connected up front: all run at once
    start = threading.Barrier(n_clients)

    def work(c):
        try:
            start.wait(timeout=30)
            for i in range(n_requests):
                k = (c + i) % K
                reply = clients[c].infer(obs[k])
                with lock:
                    assert (c, i) not in replies
                    replies[(c, i)] = (k, reply["actions"], reply["server_timing"])
        except Exception as e:  # noqa: BLE001 - reported below
            with lock:
                errors.append(f"client {c}: {e!r}")

    threads = [threading.Thread(target=work, args=(c,), daemon=True) for c in range(n_clients)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=max(1, timeout_s - (time.monotonic() - t0)))
    hung = sum(t.is_alive() for t in threads)
    elapsed = time.monotonic() - t0
    stats = server.stats()  # while all connections are open
    for client in clients:
        close_quietly(client._ws)
    assert not hung, f"{hung} clients still waiting after {timeout_s} s\n{server.log_tail()}"
    assert not errors, f"{errors[:5]}\n{server.log_tail()}"
    print(f"{n_clients} clients x {n_requests} requests: {elapsed:.1f} s, {n_clients * n_requests / elapsed:.0f} req/s")
    return replies, stats


def check_all_replies(replies, expected, n_clients, n_requests, tolerance):
    assert len(replies) == n_clients * n_requests
    assert set(replies) == set(itertools.product(range(n_clients), range(n_requests)))
    worst = 0.0
    for (c, i), (k, actions, _) in replies.items():
        assert actions.dtype == np.float64 and actions.shape == (8, 7)
        errors = [relative_error(actions, e) for e in expected]
        worst = max(worst, errors[k])
        if tolerance == 0:
            assert np.array_equal(actions, expected[k]), f"client {c} request {i}: {errors[k]:.3e} from its own"
        else:
            assert errors[k] <= tolerance, f"client {c} request {i} (observation {k}): relative error {errors[k]:.3e}"
        nearest = int(np.argmin(errors))
        assert nearest == k, f"client {c} request {i}: reply is observation {nearest}'s, not {k}'s"
    return worst


# Clients x requests of the concurrency tests. On the 2-core VM one forward of focus_f32 takes ~34 ms
# alone and ~21 ms per observation in batches of 8: batched 1600 requests take ~35 s, unbatched ones
# ~55 s, so the unbatched test sends a quarter of them to keep the file within ~90 s.
CLIENTS, REQUESTS_BATCHED, REQUESTS_UNBATCHED = 16, 100, 25


def test_concurrent_clients_batched(serve, observations):
    obs, expected = observations
    server = serve("--max-batch", 8, "--max-wait-ms", 5)
    replies, stats = run_clients(server, obs, CLIENTS, REQUESTS_BATCHED)
    worst = check_all_replies(replies, expected, CLIENTS, REQUESTS_BATCHED, BATCHED_TOLERANCE)
    sizes = [timing["batch_size"] for _, _, timing in replies.values()]
    print(f"batched replies vs focusvla act: max relative error {worst:.3e} (tolerance {BATCHED_TOLERANCE:.0e}); "
          f"batch sizes seen by replies: max {max(sizes)}, mean {np.mean(sizes):.2f}; stats {stats}")
    n = CLIENTS * REQUESTS_BATCHED
    assert max(sizes) > 1 and max(sizes) <= 8
    assert stats["requests"] == n and stats["errors"] == 0, stats
    assert stats["connections"] >= CLIENTS, stats
    assert 1 < stats["max_batch_seen"] <= 8 and stats["mean_batch"] > 1, stats
    assert stats["batches"] < n and abs(stats["mean_batch"] - stats["requests"] / stats["batches"]) < 0.01, stats
    assert "stats:" in server.log(), "no periodic stats line with --stats-interval-s 1"


def test_concurrent_clients_unbatched(serve, observations):
    obs, expected = observations
    server = serve("--max-batch", 1, "--max-wait-ms", 5)
    replies, stats = run_clients(server, obs, CLIENTS, REQUESTS_UNBATCHED)
    check_all_replies(replies, expected, CLIENTS, REQUESTS_UNBATCHED, 0)
    n = CLIENTS * REQUESTS_UNBATCHED
    assert all(timing["batch_size"] == 1 for _, _, timing in replies.values())
    assert stats["requests"] == n and stats["errors"] == 0, stats
    assert stats["max_batch_seen"] == 1 and stats["mean_batch"] == 1 and stats["batches"] == n, stats


# ----------------------------------------------------------------------------------------------
# 4. Bad input


class BackgroundClients:
    """Good openpi clients sending requests in a loop and checking every reply."""

    def __init__(self, server, obs, expected, n=2):
        self.obs, self.expected = obs, expected
        self.stop = threading.Event()
        self.failures, self.latencies = [], []  # latencies: (start time, seconds)
        self.lock = threading.Lock()
        self.clients = [openpi_client(server) for _ in range(n)]
        self.threads = [threading.Thread(target=self._run, args=(c,), daemon=True) for c in range(n)]
        for t in self.threads:
            t.start()

    def _run(self, c):
        i = 0
        try:
            while not self.stop.is_set():
                k = (5 * c + i) % K
                t0 = time.monotonic()
                actions = self.clients[c].infer(self.obs[k])["actions"]
                dt = time.monotonic() - t0
                err = relative_error(actions, self.expected[k])
                with self.lock:
                    self.latencies.append((t0, dt))
                    if err > BATCHED_TOLERANCE:
                        self.failures.append(f"good client {c} request {i}: relative error {err:.3e}")
                i += 1
        except Exception as e:  # noqa: BLE001 - reported by finish()
            with self.lock:
                self.failures.append(f"good client {c} request {i}: {e!r}")

    def count(self):
        with self.lock:
            return len(self.latencies)

    def wait_for(self, n, timeout=30):
        deadline = time.monotonic() + timeout
        while self.count() < n and time.monotonic() < deadline and not self.failures:
            time.sleep(0.01)
        assert self.count() >= n and not self.failures, self.failures

    def finish(self):
        self.stop.set()
        for t in self.threads:
            t.join(timeout=30)
        assert not any(t.is_alive() for t in self.threads), "a good client hung"
        for client in self.clients:
            close_quietly(client._ws)
        assert not self.failures, self.failures


def expect_text_error(ws, payload, *words, any_of=()):
    """Send payload on a kept connection: a text frame naming the problem comes back."""
    ws.send(payload)
    reply = ws.recv(timeout=30)
    assert isinstance(reply, str), f"sent a bad request, got a binary reply of {len(reply)} bytes"
    for word in words:
        assert word.lower() in reply.lower(), f"error text does not name {word!r}: {reply!r}"
    if any_of:
        assert any(w.lower() in reply.lower() for w in any_of), f"error text names none of {any_of}: {reply!r}"
    return reply


def expect_good(ws, obs, want):
    ws.send(msgpack_numpy.packb(obs))
    reply = ws.recv(timeout=30)
    assert isinstance(reply, bytes), f"good request after an error got a text frame: {reply!r}"
    actions = msgpack_numpy.unpackb(reply)["actions"]
    assert relative_error(actions, want) <= BATCHED_TOLERANCE


def test_bad_input_keeps_serving(serve, observations):
    obs, expected = observations
    server = serve("--max-batch", 8, "--max-wait-ms", 2, "--max-frame-mb", 1)
    background = BackgroundClients(server, obs, expected)
    background.wait_for(10)
    baseline = [dt for _, dt in background.latencies]
    baseline_p50 = float(np.median(baseline))
    good, want = obs[3], expected[3]
    pack = msgpack_numpy.packb

    ws, _ = raw_connect(server)
    errors = [
        (b"\xc1garbage", (), ("msgpack", "invalid", "parse", "decode")),
        (pack({k: v for k, v in good.items() if k != "prompt"}), ("prompt",), ("missing", "no ", "absent", "required")),
        (pack({k: v for k, v in good.items() if k != "observation/wrist_image"}), ("observation/wrist_image",), ()),
        (pack({k: v for k, v in good.items() if k != "observation/state"}), ("observation/state",), ()),
        (pack(dict(good, prompt=42)), ("prompt",), ("str", "text", "type")),
        (pack(dict(good, prompt="")), ("prompt",), ("empty",)),
        (pack(dict(good, **{"observation/image": good["observation/image"].astype(np.float32)})),
         ("observation/image", "uint8"), ()),
        (pack(dict(good, **{"observation/image": np.zeros((224, 224, 4), np.uint8)})),
         ("observation/image",), ("shape", "channel", "(h, w, 3)", "224, 224, 4", "224x224x4")),
        (pack(dict(good, **{"observation/wrist_image": np.zeros((224, 224), np.uint8)})),
         ("observation/wrist_image",), ("shape", "channel", "dimension", "(h, w, 3)", "224, 224", "224x224")),
        (pack(dict(good, **{"observation/image": "not an image"})), ("observation/image",), ()),
        (pack(dict(good, **{"observation/state": np.zeros(7)})), ("observation/state",), ("8", "length", "size")),
        (pack(dict(good, **{"observation/state": np.array([0.1] * 7 + [np.nan])})), ("observation/state",),
         ("nan", "finite")),
        (pack([1, 2, 3]), (), ("map", "dict", "object")),
        ("a text frame", (), ("binary", "text")),
    ]
    try:
        for payload, words, any_of in errors:
            expect_text_error(ws, payload, *words, any_of=any_of)
            expect_good(ws, good, want)  # the same connection works right after
    finally:
        close_quietly(ws)

    # openpi's own client: the text frame becomes RuntimeError("Error in inference server:\n...").
    client = openpi_client(server)
    with pytest.raises(RuntimeError, match=r"(?s)Error in inference server.*prompt"):
        client.infer({k: v for k, v in good.items() if k != "prompt"})
    assert relative_error(client.infer(good)["actions"], want) <= BATCHED_TOLERANCE
    close_quietly(client._ws)

    # A frame over --max-frame-mb 1: an error naming the limit, then close code 1009.
    raw = RawSocketClient(server.port)
    try:
        assert raw.recv_frame()[0] == 0x2  # metadata
        big = 2 << 20
        sender = threading.Thread(target=lambda: _send_ignoring_errors(raw, raw.frame(b"\0" * big)), daemon=True)
        sender.start()
        opcode, text = raw.recv_frame()
        assert opcode == 0x1, f"expected a text frame for an oversize frame, got opcode {opcode}"
        text = text.decode()
        assert any(w in text.lower() for w in ("1 mb", "1 mib", "1048576", "1000000", "max-frame", "limit")), text
        opcode, body = raw.recv_frame()
        assert opcode == 0x8, f"expected a close frame after the oversize error, got opcode {opcode}"
        assert struct.unpack("!H", body[:2])[0] == 1009, body
        sender.join(timeout=15)
    finally:
        raw.close()

    # Clients that vanish: half a frame then gone; a full request then gone before the reply.
    half = RawSocketClient(server.port)
    request = pack(good)
    half.send(RawSocketClient.frame(request)[: 14 + len(request) // 2])
    half.close()
    gone = RawSocketClient(server.port)
    gone.send(RawSocketClient.frame(request))
    gone.close()
    for _ in range(5):  # connect and vanish without a word, too
        RawSocketClient(server.port).close()

    # A client that pipelines 30 requests, then pings (each owed a pong), and never reads: small
    # socket buffers, so the server's writes to it back up. Checked by order, not by latency (a
    # loaded machine may be slow, never out of order): the good clients get 10 more replies while
    # the stalled client is still connected and unread (its sender thread still running, blocked
    # in send or sending: it stops only when the server closes it or after 32 MB were taken).
    stalled = RawSocketClient(server.port, rcvbuf=4096)
    stalled.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    stalled.sock.settimeout(60)
    small = dict(good, **{k: good[k][::8, ::8].copy() for k in IMAGE_KEYS})  # 28 x 28: cheap frames
    stalled_sender = StalledSender(stalled, [RawSocketClient.frame(pack(small))] * 30)
    blocked = stalled_sender.wait_blocked(timeout=30)
    served_before = background.count()
    background.wait_for(served_before + 10)
    assert stalled_sender.thread.is_alive(), \
        f"the stalled client was dropped or fully drained ({stalled_sender.sent / 1e6:.1f} MB sent) before the others were served"
    stall_latencies = [dt for _, dt in background.latencies[served_before:]]
    with contextlib.suppress(OSError):
        stalled.sock.shutdown(socket.SHUT_RDWR)  # wakes the sender
    stalled.close()
    stalled_sender.thread.join(timeout=15)
    assert not stalled_sender.thread.is_alive()
    print(f"stalled client: sent {stalled_sender.sent / 1e6:.1f} MB, "
          f"{'its sends blocked' if blocked else 'never blocked for 1 s'}; good clients: baseline p50 "
          f"{1e3 * baseline_p50:.1f} ms; meanwhile {len(stall_latencies)} requests, p50 "
          f"{1e3 * np.median(stall_latencies):.1f} ms, max {1e3 * max(stall_latencies):.1f} ms")

    background.wait_for(background.count() + 10)
    background.finish()  # every good request answered (each within its 30 s receive limit), none wrong

    # Still alive, healthy, and it said so in its log.
    assert server.alive(), server.log_tail()
    assert server.http("/healthz") == (200, "OK\n")
    stats = server.stats()
    assert stats["errors"] >= len(errors) + 2, stats
    if "open_connections" in stats:  # every client above is gone: none may linger
        deadline = time.monotonic() + 10
        while stats["open_connections"] and time.monotonic() < deadline:
            time.sleep(0.1)
            stats = server.stats()
        assert stats["open_connections"] == 0, stats
    log = server.log()
    for word in ("prompt", "observation/image", "observation/state", "msgpack"):
        assert word in log, f"the log does not mention the {word!r} errors:\n{server.log_tail()}"


class StalledSender:
    """Sends data, then ping frames (125-byte payloads) until the socket blocks (the peer stopped
    reading) or 32 MB went out; never reads."""

    def __init__(self, raw, frames):
        self.raw, self.frames, self.sent, self.pinging = raw, frames, 0, False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        pings = RawSocketClient.frame(b"p" * 125, opcode=0x9) * 64
        try:
            for frame in self.frames:
                self.raw.send(frame)
                self.sent += len(frame)
            self.pinging = True
            while self.sent < 32 << 20:
                self.raw.send(pings)
                self.sent += len(pings)
        except OSError:
            pass  # shut down by the test

    def wait_blocked(self, timeout):
        """True once the requests went out and then no ping for 1 s; False if still sending after
        timeout, or done (32 MB of pings taken: the server buffers its pongs without bound)."""
        deadline = time.monotonic() + timeout
        last, since = -1, time.monotonic()
        while time.monotonic() < deadline and self.thread.is_alive():
            if self.sent != last or not self.pinging:
                last, since = self.sent, time.monotonic()
            elif time.monotonic() - since >= 1.0:
                return True
            time.sleep(0.05)
        return False


def _send_ignoring_errors(raw, data):
    try:
        raw.send(data)
    except OSError:
        pass  # the server may close first


# ----------------------------------------------------------------------------------------------
# 5. Operations


def _status_of(exc):
    response = getattr(exc, "response", None)
    return getattr(response, "status_code", None) or getattr(exc, "status_code", None)
