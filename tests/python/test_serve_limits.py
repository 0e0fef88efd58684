"""`focusvla serve` under pressure (issue 22): the connection cap and a flood past it, a queued
request whose client is gone (cancelled, not run), the prompt byte cap, and a prompt over the
model's position limit refused on the io thread before it can spoil a batch. Shares the server
harness of test_serve.py (same venv, same fixtures). Every flood is bounded in count and time.
"""
import json
import socket
import sys
import time
from pathlib import Path

import pytest
import websockets.exceptions
from openpi_client import msgpack_numpy

sys.path.insert(0, str(Path(__file__).resolve().parent))
from serve_process import FOCUS, HOST, close_quietly, raw_connect, serve  # noqa: E402,F401
from test_serve import _status_of, expect_good, expect_text_error, observations  # noqa: E402,F401

pytestmark = pytest.mark.filterwarnings("ignore:connect\\(\\) must be used as a context manager:DeprecationWarning")

HTTP_SLACK = 64  # ServerOptions: connections still in their first HTTP request beyond the websocket places


def wait_until(predicate, timeout_s, what):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError(f"not within {timeout_s} s: {what}")


def test_connection_cap_and_flood(serve, observations):
    obs, expected = observations
    cap = 4
    server = serve("--max-connections", cap)
    held = [raw_connect(server)[0] for _ in range(cap)]
    # 40 upgrades past the cap: each gets 503 naming the option; the server stays up.
    for _ in range(40):
        with pytest.raises(websockets.exceptions.InvalidHandshake) as refused:
            raw_connect(server)
        assert _status_of(refused.value) == 503, repr(refused.value)
    body = getattr(getattr(refused.value, "response", None), "body", b"") or b""
    assert b"--max-connections" in body, body
    assert server.alive()
    assert server.stats()["refused_connections"] >= 40
    # The held connections still work.
    expect_good(held[0], obs[0], expected[0])
    # A raw TCP flood that never sends a byte: beyond cap + HTTP_SLACK connections the server drops
    # new sockets at once instead of holding a descriptor for each.
    flood = []
    try:
        for _ in range(HTTP_SLACK + 16):
            s = socket.create_connection((HOST, server.port), timeout=5)
            flood.append(s)
        dropped = 0
        for s in flood[-8:]:
            s.settimeout(5)
            try:
                dropped += s.recv(1) == b""
            except (ConnectionResetError, socket.timeout):
                dropped += 0
        assert dropped == 8, f"only {dropped} of the last 8 sockets past cap + slack were dropped"
    finally:
        for s in flood:
            close_quietly(s)
    # A place freed is a place taken again.
    close_quietly(held.pop())

    def reconnects():
        try:
            held.append(raw_connect(server)[0])
            return True
        except websockets.exceptions.InvalidHandshake:
            return False
    wait_until(reconnects, 10, "a new connection after one of the capped ones closed")
    expect_good(held[-1], obs[1], expected[1])
    for ws in held:
        close_quietly(ws)
    assert server.alive()


def test_queued_request_of_a_gone_client_is_cancelled(serve, observations):
    obs, expected = observations
    # Two connections and a 3 s batching window: a lone queued request waits for the second peer
    # (the batcher knows two could be waiting), long enough for its client to vanish first.
    server = serve("--max-batch", 8, "--max-wait-ms", 3000)
    keep, _ = raw_connect(server)
    gone, _ = raw_connect(server)
    gone.send(msgpack_numpy.packb(obs[0]))
    wait_until(lambda: server.stats()["requests"] == 1, 5, "the request reached the server")
    close_quietly(gone)
    wait_until(lambda: server.stats()["cancelled"] == 1, 10, "the gone client's request was cancelled")
    stats = server.stats()
    assert stats["batches"] == 0, f"the gone client's request ran: {stats}"
    expect_good(keep, obs[1], expected[1])
    assert server.stats()["batches"] == 1
    close_quietly(keep)
    assert server.alive()


def test_prompt_limits_are_the_requests_own_error(serve, observations):
    obs, expected = observations
    limit = json.loads((FOCUS / "config.json").read_text())["text_config"]["max_position_embeddings"]
    server = serve("--max-prompt-bytes", 1 << 20, "--max-batch", 8, "--max-wait-ms", 2)
    ws, _ = raw_connect(server)
    # Over the model's position limit: refused on the io thread, before the batcher. Each
    # "word<i>" is at least one token.
    long_prompt = " ".join(f"word{i}" for i in range(limit + 1))
    expect_text_error(ws, msgpack_numpy.packb(dict(obs[2], prompt=long_prompt)), "instruction",
                      "positions", str(limit))
    assert server.stats()["batches"] == 0, "an over-long prompt reached the batcher"
    expect_good(ws, obs[2], expected[2])
    close_quietly(ws)

    cap = 100  # every LIBERO task of the observations fits
    assert len(obs[3]["prompt"].encode()) <= cap
    capped = serve("--max-prompt-bytes", cap)
    ws, _ = raw_connect(capped)
    expect_text_error(ws, msgpack_numpy.packb(dict(obs[3], prompt="x" * (cap + 1))), "prompt", "--max-prompt-bytes",
                      str(cap))
    expect_good(ws, obs[3], expected[3])
    close_quietly(ws)
    assert capped.stats()["batches"] == 1


def test_serve_rejects_bad_limits(serve):
    for flag, value in (("--max-connections", 0), ("--max-prompt-bytes", 0)):
        with pytest.raises(AssertionError, match="exited with status"):
            serve(flag, value)
