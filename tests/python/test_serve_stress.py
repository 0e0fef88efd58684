"""`focusvla serve` under a mixed, bounded load (issue 22): 32 clients, each a fixed, seeded script
of requests drawn from good observations, malformed frames, requests abandoned mid-flight (the
socket closed before the reply) and slow readers (the reply read late). Every good request must
be answered with its own observation's actions, every bad one with a named error on a connection
that stays usable, and the server must be alive and consistent at the end (its /stats count every
request). ctest runs this file against the normal build (serve_openpi) and against the server
built with AddressSanitizer + UBSan (serve_asan), where any memory error or undefined behaviour
aborts the server and fails the test (the `serve` fixture also scans its stderr).
"""
import concurrent.futures
import random
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import websockets.exceptions
from openpi_client import msgpack_numpy

sys.path.insert(0, str(Path(__file__).resolve().parent))
from serve_common import relative_error  # noqa: E402
from serve_process import close_quietly, raw_connect, serve  # noqa: E402,F401
from test_serve import BATCHED_TOLERANCE, observations  # noqa: E402,F401

pytestmark = pytest.mark.filterwarnings("ignore:connect\\(\\) must be used as a context manager:DeprecationWarning")

CLIENTS = 32
STEPS = 8  # per client: 256 steps in all, bounded in count; each wait below is bounded in time
REPLY_TIMEOUT_S = 240  # a reply under ASan on 2 cores, behind a full queue


def bad_frames(obs):
    """Malformed requests, each answered with a text frame naming the problem."""
    good = obs[0]
    return [
        b"\xc1 not msgpack",
        msgpack_numpy.packb({k: v for k, v in good.items() if k != "prompt"}),
        msgpack_numpy.packb({**good, "observation/state": np.zeros(3)}),
        msgpack_numpy.packb({**good, "observation/image": np.zeros((224, 224, 4), np.uint8)}),
        msgpack_numpy.packb({**good, "observation/state": np.full(8, np.nan)}),
        msgpack_numpy.packb([1, 2, 3]),
    ]


def run_script(server, obs, expected, seed):
    """One client's script; returns (good answered, bad answered, abandoned) or raises."""
    rng = random.Random(seed)
    bad = bad_frames(obs)
    ws = raw_connect(server)[0]
    counts = {"good": 0, "bad": 0, "abandoned": 0}
    try:
        for _ in range(STEPS):
            kind = rng.choices(["good", "bad", "abandon", "slow"], weights=[5, 2, 1, 1])[0]
            if kind == "bad":
                ws.send(rng.choice(bad))
                reply = ws.recv(timeout=REPLY_TIMEOUT_S)
                assert isinstance(reply, str), f"client {seed}: a bad frame got a binary reply"
                counts["bad"] += 1
                continue
            k = rng.randrange(len(obs))
            ws.send(msgpack_numpy.packb(obs[k]))
            if kind == "abandon":  # gone before the reply: the server must cancel or drop it
                close_quietly(ws)
                counts["abandoned"] += 1
                ws = raw_connect(server)[0]
                continue
            if kind == "slow":
                time.sleep(rng.uniform(0.2, 1.0))
            reply = ws.recv(timeout=REPLY_TIMEOUT_S)
            assert isinstance(reply, bytes), f"client {seed}: a good request got a text frame: {reply!r}"
            actions = msgpack_numpy.unpackb(reply)["actions"]
            error = relative_error(actions, expected[k])
            assert error <= BATCHED_TOLERANCE, f"client {seed}: observation {k} answered {error:.3e} off"
            counts["good"] += 1
    finally:
        close_quietly(ws)
    return counts


def test_mixed_clients_under_load(serve, observations):
    obs, expected = observations
    server = serve("--max-batch", 8, "--max-wait-ms", 5, "--max-connections", 64)
    with concurrent.futures.ThreadPoolExecutor(CLIENTS) as pool:
        results = list(pool.map(lambda c: run_script(server, obs, expected, 1000 + c), range(CLIENTS)))
    total = {key: sum(r[key] for r in results) for key in results[0]}
    print(f"{CLIENTS} clients x {STEPS} steps: {total}")
    assert total["good"] > 0 and total["bad"] > 0 and total["abandoned"] > 0, total
    assert server.alive(), server.log_tail()
    # Still serving, and every request accounted for once the abandoned ones have settled.
    ws = raw_connect(server)[0]
    try:
        ws.send(msgpack_numpy.packb(obs[1]))
        assert relative_error(msgpack_numpy.unpackb(ws.recv(timeout=REPLY_TIMEOUT_S))["actions"],
                              expected[1]) <= BATCHED_TOLERANCE
    finally:
        close_quietly(ws)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        stats = server.stats()
        if stats["open_connections"] == 0:
            break
        time.sleep(0.1)
    assert stats["open_connections"] == 0, stats
    assert stats["requests"] >= total["good"] + total["bad"] + total["abandoned"] + 1, stats
    assert stats["errors"] >= total["bad"], stats
    assert stats["replies"] >= total["good"] + 1, stats
    assert server.alive(), server.log_tail()
