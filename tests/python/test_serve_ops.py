"""`focusvla serve` operations, driven by openpi's own websocket client and raw sockets: /healthz,
/stats and the default bind, --api-key, SIGTERM / SIGINT drain, pings and pipelined requests
while one is in flight, the idle timeout, --help and bad paths, a one-camera policy without
proprio, a checkpoint in the release layout without a camera count, and batch buckets with the
warm-up. The protocol, the concurrency and bad input: test_serve.py.

    run_serve.sh SOURCE_DIR BUILD_DIR TEST_DATA   (ctest serve_openpi; environment FOCUSVLA_CLI, FOCUSVLA_TEST_DATA)
"""
import json
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import websockets.exceptions
from openpi_client import msgpack_numpy

sys.path.insert(0, str(Path(__file__).resolve().parent))
from serve_process import (CLI, FOCUS, HOST, PRO_1CAM, RawSocketClient, close_quietly,  # noqa: E402,F401
                           openpi_client, raw_connect, serve)
from serve_common import IMAGE_KEYS, TASKS, UNNORM  # noqa: E402
from test_serve import _status_of, act_cli, libero_observation, observations  # noqa: E402,F401

pytestmark = pytest.mark.filterwarnings("ignore:connect\\(\\) must be used as a context manager:DeprecationWarning")


def test_health_stats_and_default_bind(serve):
    server = serve()
    assert re.search(r"ws://127\.0\.0\.1:\d+", server.listening_line), server.listening_line
    assert server.stdout_path.read_text() == server.listening_line + "\n", "stdout has more than the listening line"
    assert server.http("/healthz") == (200, "OK\n")
    stats = server.stats()
    for key in ("connections", "requests", "errors", "batches", "max_batch_seen", "mean_batch"):
        assert key in stats, stats
    assert stats["requests"] == 0 and stats["errors"] == 0, stats


def test_api_key(serve, observations):
    obs, expected = observations
    server = serve("--api-key", "s3cret-key")
    for kwargs in ({}, {"api_key": "wrong-key"}, {"api_key": "s3cret-ke"}):
        with pytest.raises(websockets.exceptions.InvalidHandshake) as refused:
            openpi_client(server, **kwargs)
        assert _status_of(refused.value) == 401, repr(refused.value)
    client = openpi_client(server, api_key="s3cret-key")
    assert np.array_equal(client.infer(obs[0])["actions"], expected[0])
    close_quietly(client._ws)
    assert server.alive()


def _expect_refused(port):
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((HOST, port), timeout=5).close()


def _expect_going_away(client):
    with pytest.raises(websockets.exceptions.ConnectionClosed) as closed:
        client._ws.recv(timeout=10)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1001, repr(closed.value)


def test_sigterm_drains_in_flight_request(serve, observations):
    obs, expected = observations
    server = serve("--max-wait-ms", 1000, "--max-batch", 8)
    # The batcher runs at once when every open connection has a request queued: an idle second
    # connection makes the lone request wait ~1 s for a peer, so SIGTERM finds it in flight.
    idle, _ = raw_connect(server)
    client = openpi_client(server)
    result = {}

    def infer():
        try:
            result["reply"] = client.infer(obs[1])
        except Exception as e:  # noqa: BLE001
            result["error"] = e

    thread = threading.Thread(target=infer, daemon=True)
    thread.start()
    time.sleep(0.3)
    assert thread.is_alive(), "the request did not wait in the batcher"
    server.signal(signal.SIGTERM)
    thread.join(timeout=15)
    assert not thread.is_alive(), "no reply to the in-flight request after SIGTERM"
    assert "error" not in result, f"in-flight request failed: {result.get('error')!r}\n{server.log_tail()}"
    assert np.array_equal(result["reply"]["actions"], expected[1])
    assert server.wait(timeout=10) == 0, server.log_tail()
    _expect_going_away(client)
    with pytest.raises(websockets.exceptions.ConnectionClosed) as closed:
        idle.recv(timeout=10)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1001, repr(closed.value)
    _expect_refused(server.port)


def test_pings_answered_while_a_request_is_in_flight(serve, observations):
    """openpi's client pings every 20 s and drops the connection without a pong within 20 s: a
    request in flight longer than that (a full-size batch on a CPU) must not cost the connection.
    The server keeps reading during inference, so pings are answered and a client that vanishes
    mid-request is noticed at once."""
    obs, expected = observations
    server = serve("--max-wait-ms", 3000, "--max-batch", 8)
    idle, _ = raw_connect(server)  # a second open connection: the request waits ~3 s for a peer
    ws, _ = raw_connect(server, ping_interval=None)
    start = time.monotonic()
    ws.send(msgpack_numpy.packb(obs[2]))
    pongs = []
    for _ in range(4):
        time.sleep(0.3)
        sent = time.monotonic()
        assert ws.ping().wait(timeout=2), "no pong while the request was in flight"
        pongs.append(time.monotonic() - sent)
    assert time.monotonic() - start < 2.9, "the request did not stay in flight during the pings"
    reply = msgpack_numpy.unpackb(ws.recv(timeout=30))
    assert np.array_equal(reply["actions"], expected[2])
    print(f"pong latency with a request in flight: max {max(pongs) * 1000:.1f} ms")
    # A client that vanishes with its request in flight: noticed and logged, the server serves on.
    gone, _ = raw_connect(server)
    gone.send(msgpack_numpy.packb(obs[3]))
    time.sleep(0.2)
    close_quietly(gone)
    deadline = time.monotonic() + 10
    while "with a request in flight" not in server.log() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "with a request in flight" in server.log(), server.log_tail()
    ws.send(msgpack_numpy.packb(obs[4]))
    assert np.array_equal(msgpack_numpy.unpackb(ws.recv(timeout=30))["actions"], expected[4])
    close_quietly(ws)
    close_quietly(idle)


def test_pipelined_requests_answered_in_order(serve, observations):
    """Requests sent without waiting: the second is held while the first is in flight and answered
    after it, a bad one with its error text, in order; the connection carries on."""
    obs, expected = observations
    server = serve()
    ws, _ = raw_connect(server)
    for _ in range(3):
        ws.send(msgpack_numpy.packb(obs[5]))
        ws.send(b"\xc1 not msgpack")
        ws.send("a text frame")
        ws.send(msgpack_numpy.packb(obs[6]))
        first = ws.recv(timeout=30)
        assert isinstance(first, bytes) and np.array_equal(msgpack_numpy.unpackb(first)["actions"], expected[5])
        assert "invalid msgpack" in ws.recv(timeout=30)
        assert "text frame" in ws.recv(timeout=30)
        last = ws.recv(timeout=30)
        assert isinstance(last, bytes) and np.array_equal(msgpack_numpy.unpackb(last)["actions"], expected[6])
    close_quietly(ws)
    assert server.alive(), server.log_tail()


def test_signal_without_connections_exits_at_once(serve):
    for sig in (signal.SIGTERM, signal.SIGINT):
        server = serve()
        status, _ = server.http("/healthz")  # an HTTP exchange, then no connection at all
        assert status == 200
        server.signal(sig)
        assert server.wait(timeout=10) == 0, server.log_tail()
        assert "serve: stopped" in server.log(), server.log_tail()


def test_sigint_exits_cleanly(serve, observations):
    obs, expected = observations
    server = serve()
    client = openpi_client(server)
    assert np.array_equal(client.infer(obs[2])["actions"], expected[2])
    server.signal(signal.SIGINT)
    assert server.wait(timeout=10) == 0, server.log_tail()
    _expect_going_away(client)
    _expect_refused(server.port)


SERVE_FLAGS = ["--checkpoint", "--host", "--port", "--device", "--max-batch", "--max-wait-ms", "--max-frame-mb",
               "--api-key", "--image-key", "--state-key", "--prompt-key", "--io-threads", "--idle-timeout-s",
               "--stats-interval-s", "--drain-timeout-s", "--unnorm-key", "--prompt-format", "--dtype",
               "--center-crop", "--no-center-crop", "--threads", "--batch-buckets", "--max-cached-shapes",
               "--warmup"]


def test_help_and_bad_checkpoint(tmp_path):
    out = subprocess.run([CLI, "serve", "--help"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    for flag in SERVE_FLAGS:
        assert re.search(re.escape(flag) + r"\b", out.stdout), f"serve --help does not mention {flag}"
    missing = tmp_path / "no-such-checkpoint"
    out = subprocess.run([CLI, "serve", "--checkpoint", str(missing), "--port", "0"], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 1, (out.returncode, out.stdout, out.stderr)
    assert str(missing) in out.stderr, out.stderr
    assert "listening" not in out.stdout


def test_idle_timeout(serve, observations):
    obs, expected = observations
    server = serve("--idle-timeout-s", 1)
    client = openpi_client(server)  # answers pings (websockets does): idle, but alive
    silent = RawSocketClient(server.port)  # reads nothing, answers nothing
    t0 = time.monotonic()
    silent.sock.settimeout(10)
    opcode = None
    try:
        while opcode != 0x8:
            opcode, _ = silent.recv_frame()  # the metadata, maybe pings, then the close frame
    except ConnectionError:
        pass  # or the server just dropped it
    except socket.timeout:
        pytest.fail("a silent connection outlived --idle-timeout-s 1 by 10 s")
    closed_after = time.monotonic() - t0
    silent.close()
    assert 0.5 < closed_after < 5, f"silent connection closed after {closed_after:.1f} s"
    time.sleep(max(0.0, 2.5 - (time.monotonic() - t0)))
    assert np.array_equal(client.infer(obs[4])["actions"], expected[4]), "an idle openpi client was dropped"
    close_quietly(client._ws)


# ----------------------------------------------------------------------------------------------
# 6. One camera, no proprio


def test_one_camera_no_proprio(serve, tmp_path):
    server = serve(checkpoint=PRO_1CAM)
    rng = np.random.default_rng(11)
    obs = libero_observation(rng, TASKS[10])
    client = openpi_client(server)
    meta = client.get_server_metadata()
    assert meta["cameras"] == 1 and list(meta["image_keys"]) == ["observation/image"], meta
    assert meta["proprio_dim"] in (0, None), meta
    want = act_cli(tmp_path / "pro", PRO_1CAM, [obs["observation/image"]], obs["prompt"], None)
    only = {"observation/image": obs["observation/image"], "prompt": obs["prompt"]}
    assert np.array_equal(client.infer(only)["actions"], want)
    # A state and a wrist image, when sent, are ignored by this policy.
    assert np.array_equal(client.infer(obs)["actions"], want)
    close_quietly(client._ws)


def released_copy(tmp_path, checkpoint):
    """A copy of `checkpoint` whose config.json has no num_images_in_input (as the released
    VLA-Adapter checkpoints): the policy's camera count follows each call."""
    released = tmp_path / f"released_{checkpoint.name}"
    released.mkdir()
    for f in checkpoint.iterdir():
        if f.is_file() and f.name != "config.json":
            (released / f.name).symlink_to(f.resolve())
    config = json.loads((checkpoint / "config.json").read_text())
    del config["num_images_in_input"]
    (released / "config.json").write_text(json.dumps(config))
    return released


def test_released_checkpoint_without_camera_count(serve, tmp_path):
    """No num_images_in_input: the default image keys (LIBERO's two) fix the camera count; named
    keys fix it to theirs."""
    released = released_copy(tmp_path, FOCUS)
    rng = np.random.default_rng(13)
    obs = libero_observation(rng, TASKS[3])
    server = serve(checkpoint=released)
    client = openpi_client(server)
    meta = client.get_server_metadata()
    assert meta["cameras"] == 2 and list(meta["image_keys"]) == IMAGE_KEYS, meta
    want = act_cli(tmp_path / "two", FOCUS, [obs[k] for k in IMAGE_KEYS], obs["prompt"], obs["observation/state"])
    assert np.array_equal(client.infer(obs)["actions"], want)
    close_quietly(client._ws)

    one = serve("--image-key", "observation/image", checkpoint=released)
    client = openpi_client(one)
    meta = client.get_server_metadata()
    assert meta["cameras"] == 1 and list(meta["image_keys"]) == ["observation/image"], meta
    want = act_cli(tmp_path / "one", released, [obs["observation/image"]], obs["prompt"], obs["observation/state"])
    assert np.array_equal(client.infer(obs)["actions"], want)
    close_quietly(client._ws)


# ----------------------------------------------------------------------------------------------
# 7. Batch buckets and the warm-up


def test_batch_buckets_and_warmup(serve, observations, tmp_path):
    """--warmup runs every --batch-buckets size before the server listens (/stats counts the cached
    shapes); batches padded to a bucket give each request its own observation's actions; a lone
    request (bucket 1) is `focusvla act` exactly."""
    from test_serve import BATCHED_TOLERANCE, relative_error
    obs, expected = observations
    prompt = obs[0]["prompt"]
    server = serve("--batch-buckets", "4,1,2", "--max-cached-shapes", 4, "--warmup", prompt, "--max-wait-ms", 200)
    client = openpi_client(server)
    meta = client.get_server_metadata()
    assert meta["settings"]["batch_buckets"] == [1, 2, 4], meta["settings"]
    assert list(meta["warmup_instructions"]) == [prompt], meta
    assert server.stats()["cached_shapes"] == 3, server.stats()
    assert np.array_equal(client.infer(obs[0])["actions"], expected[0])
    close_quietly(client._ws)
    assert server.stats()["cached_shapes"] == 3, server.stats()  # batch 1 of the warmed prompt: no new shape

    # Three clients at once, all with the warmed prompt (batches of 1 to 3, padded to 1, 2 or 4):
    # each gets its own images' and state's actions; no shape beyond the warmed ones is made.
    same = [dict(o, prompt=prompt) for o in obs[1:4]]
    wanted = [act_cli(tmp_path / f"same{i}", FOCUS, [o[k] for k in IMAGE_KEYS], prompt, o["observation/state"])
              for i, o in enumerate(same)]
    replies, errors = [None] * len(same), []

    def one(i):
        try:
            c = openpi_client(server)
            replies[i] = c.infer(same[i])["actions"]
            close_quietly(c._ws)
        except Exception as e:  # reported below
            errors.append(repr(e))

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(same))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    for got, want in zip(replies, wanted):
        assert got is not None and relative_error(got, want) <= BATCHED_TOLERANCE, relative_error(got, want)
    stats = server.stats()
    assert stats["errors"] == 0 and stats["cached_shapes"] == 3, stats


def test_bad_batch_buckets_and_warmup(tmp_path):
    for flags, words in ((["--batch-buckets", "0,2"], ["--batch-buckets", "'0' is out of range"]),
                         (["--batch-buckets", "1,x"], ["--batch-buckets", "'x' is not an integer"]),
                         (["--batch-buckets", "1,,2"], ["--batch-buckets", "'' is not an integer"]),
                         (["--max-cached-shapes", "0"], ["--max-cached-shapes", "out of range"]),
                         (["--warmup", " "], ["instruction", "is empty"])):
        out = subprocess.run([CLI, "serve", "--checkpoint", str(FOCUS), "--unnorm-key", UNNORM, "--port", "0",
                              "--device", "cpu", *flags], capture_output=True, text=True, timeout=120)
        assert out.returncode != 0 and "listening" not in out.stdout, (flags, out.returncode, out.stdout)
        for word in words:
            assert word in out.stderr, (flags, word, out.stderr)
