"""Robot clients for tests/python/test_ray_serve.py: openpi's own WebsocketClientPolicy (PyPI
openpi-client, which needs numpy<2: run with .venv-openpi's python), N threads each with its own
connection, every request's outcome as one JSON line on stdout.

    ray_serve_clients.py --port P [--path /prefix] --observations obs.npz --clients 16
                         [--requests 25 | --stop-file F]

Request i of client c sends observation (c + i) % K of obs.npz (arrays named "{k}/observation/image",
..., "{k}/prompt"). Lines: {"event": "metadata", ...} once, then per request {"event": "reply", "c", "i",
"k", "t0", "t1", "actions" (nested lists, exact float64), "timing", "replica"} or {"event": "error",
"c", "i", "k", "t0", "t1", "error"}; a client whose connection failed reconnects and goes on. A
request with no outcome after --request-timeout-s is reported as {"event": "hung"} and the script
exits 3: no request can vanish without a line. Last line: {"event": "done", ...}.
"""
import argparse
import json
import sys
import threading
import time
from pathlib import Path

import numpy as np
from openpi_client.websocket_client_policy import WebsocketClientPolicy

_out_lock = threading.Lock()


def emit(record):
    line = json.dumps(record)
    with _out_lock:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


def load_observations(path):
    data = np.load(path)
    k_count = 1 + max(int(name.split("/", 1)[0]) for name in data.files)
    obs = []
    for k in range(k_count):
        o = {}
        for name in data.files:
            head, key = name.split("/", 1)
            if int(head) == k:
                value = data[name]
                o[key] = str(value) if value.dtype.kind == "U" else value
        obs.append(o)
    return obs


def connect(port, path, deadline):
    while True:
        try:
            if path:  # openpi's client takes a full URI as its host
                return WebsocketClientPolicy(host=f"ws://127.0.0.1:{port}{path}")
            return WebsocketClientPolicy(host="127.0.0.1", port=port)
        except Exception:  # noqa: BLE001 - retried until the deadline
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--path", default="", help="the application's route prefix (e.g. /noretry)")
    p.add_argument("--observations", required=True)
    p.add_argument("--clients", type=int, default=16)
    p.add_argument("--requests", type=int, default=0, help="per client; 0: until --stop-file exists")
    p.add_argument("--stop-file")
    p.add_argument("--request-timeout-s", type=float, default=60)
    p.add_argument("--max-s", type=float, default=300, help="stop sending after this long in any case")
    args = p.parse_args()
    obs = load_observations(args.observations)
    k_count = len(obs)
    stop_file = Path(args.stop_file) if args.stop_file else None

    clients = [connect(args.port, args.path, time.monotonic() + 30) for _ in range(args.clients)]  # all connected first
    emit({"event": "metadata", "metadata": clients[0].get_server_metadata()})
    in_flight = {}  # c -> (i, start)
    lock = threading.Lock()
    counts = {"replies": 0, "errors": 0, "reconnects": 0}
    start_barrier = threading.Barrier(args.clients)
    t_start = time.monotonic()

    def keep_going(i):
        if args.requests:
            return i < args.requests
        return not (stop_file and stop_file.exists()) and time.monotonic() - t_start < args.max_s

    def work(c):
        start_barrier.wait(timeout=30)
        client = clients[c]
        i = 0
        while keep_going(i):
            k = (c + i) % k_count
            with lock:
                in_flight[c] = (i, time.monotonic())
            t0 = time.time()
            try:
                reply = client.infer(obs[k])
                record = {"event": "reply", "c": c, "i": i, "k": k, "t0": t0, "t1": time.time(),
                          "actions": np.asarray(reply["actions"]).tolist(),
                          "dtype": str(np.asarray(reply["actions"]).dtype),
                          "timing": {key: float(v) for key, v in reply["server_timing"].items()},
                          "replica": reply.get("replica")}
                with lock:
                    counts["replies"] += 1
            except Exception as e:  # noqa: BLE001 - the error text frame (RuntimeError) or a lost connection
                record = {"event": "error", "c": c, "i": i, "k": k, "t0": t0, "t1": time.time(),
                          "error": f"{type(e).__name__}: {e}"}
                with lock:
                    counts["errors"] += 1
                if not isinstance(e, RuntimeError):  # the connection is gone: a new one
                    try:
                        client._ws.close()
                    except Exception:  # noqa: BLE001
                        pass
                    client = clients[c] = connect(args.port, args.path, time.monotonic() + 30)
                    with lock:
                        counts["reconnects"] += 1
            with lock:
                del in_flight[c]
            emit(record)
            i += 1

    threads = [threading.Thread(target=work, args=(c,), daemon=True) for c in range(args.clients)]
    for t in threads:
        t.start()
    while any(t.is_alive() for t in threads):
        time.sleep(0.1)
        now = time.monotonic()
        with lock:
            hung = [(c, i, now - s) for c, (i, s) in in_flight.items() if now - s > args.request_timeout_s]
        if hung:
            for c, i, waited in hung:
                emit({"event": "hung", "c": c, "i": i, "waited_s": waited})
            emit({"event": "done", **counts, "hung": len(hung)})
            sys.stdout.flush()
            import os

            os._exit(3)
    for client in clients:
        try:
            client._ws.close()
        except Exception:  # noqa: BLE001
            pass
    emit({"event": "done", **counts, "hung": 0, "seconds": time.monotonic() - t_start})


if __name__ == "__main__":
    main()
