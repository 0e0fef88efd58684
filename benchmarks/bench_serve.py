#!/usr/bin/env python3
"""`focusvla serve` under load, measured with openpi's own client (openpi_client from PyPI):
p50 / p99 request latency and actions per second for 1, 4 and 16 concurrent robots, with dynamic
batching on (--max-batch 8) and off (--max-batch 1), plus `focusvla act` on the same checkpoint in
the same run (the cost of one forward without a server). Run it through scripts/bench_serve.

    bench_serve.py --cli build/focusvla --checkpoint DIR [--device cpu] [--requests N] [--json OUT]

Each robot is a thread with its own WebsocketClientPolicy sending LIBERO-shaped observations
(two 224 x 224 uint8 cameras, an 8-dim state, a prompt) back to back, as openpi's LIBERO example
does; the first request of each robot is a warm-up and not timed. Latency is the client's wall
time of infer(); actions/s counts 8 actions per reply over the wall time of the timed phase;
added latency is each request's latency minus its batch's forward (server_timing infer_ms):
decoding, queueing and batch wait, encoding and the transport, the server's own cost per request.
On the tiny test checkpoint (`--checkpoint build/test_data/policy/focus_f32 --clients 1,16,64`)
the forward is ~milliseconds, so replies/s and the added latency are the server's overhead.
"""
import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

import numpy as np
from openpi_client import websocket_client_policy


def observation(rng, k):
    return {"observation/image": rng.integers(0, 256, (224, 224, 3), dtype=np.uint8),
            "observation/wrist_image": rng.integers(0, 256, (224, 224, 3), dtype=np.uint8),
            "observation/state": rng.standard_normal(8),
            "prompt": ["put the bowl on the plate", "open the top drawer", "pick up the black bowl",
                       "turn on the stove"][k % 4]}


def start_server(args, max_batch):
    cmd = [args.cli, "serve", "--checkpoint", args.checkpoint, "--port", "0", "--device", args.device,
           "--max-batch", str(max_batch), "--max-wait-ms", str(args.max_wait_ms), "--stats-interval-s", "0"]
    if args.unnorm_key:
        cmd += ["--unnorm-key", args.unnorm_key]
    log = tempfile.NamedTemporaryFile("w+", prefix="bench_serve_", suffix=".log", delete=False)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log, text=True)
    line = proc.stdout.readline()
    match = re.search(r"ws://[^:]+:(\d+)", line)
    if not match:
        proc.kill()
        sys.exit(f"bench_serve: the server did not start: {open(log.name).read()[-2000:]}")
    return proc, int(match.group(1)), line.strip()


def stats(port):
    return json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/stats", timeout=10).read())


def run_clients(port, clients, requests, seed):
    rng = np.random.default_rng(seed)
    observations = [observation(rng, k) for k in range(clients)]
    policies = [websocket_client_policy.WebsocketClientPolicy(host="127.0.0.1", port=port) for _ in range(clients)]
    for policy, obs in zip(policies, observations):  # warm-up (first shapes, first batch)
        policy.infer(obs)
    latencies = [[] for _ in range(clients)]
    added = [[] for _ in range(clients)]  # latency minus the batch's forward (server_timing infer_ms)
    errors = []
    barrier = threading.Barrier(clients + 1)

    def robot(k):
        barrier.wait()
        try:
            for _ in range(requests):
                start = time.perf_counter()
                reply = policies[k].infer(observations[k])
                latencies[k].append((time.perf_counter() - start) * 1000)
                added[k].append(latencies[k][-1] - reply["server_timing"]["infer_ms"])
                assert reply["actions"].shape == (8, 7)
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(repr(e))

    threads = [threading.Thread(target=robot, args=(k,)) for k in range(clients)]
    for t in threads:
        t.start()
    before = stats(port)
    barrier.wait()
    start = time.perf_counter()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    after = stats(port)
    for p in policies:
        p._ws.close()
    if errors:
        sys.exit(f"bench_serve: client errors: {errors[:3]}")
    flat = np.array([x for per in latencies for x in per])
    extra = np.array([x for per in added for x in per])
    batches = after["batches"] - before["batches"]
    return {"clients": clients, "requests": int(flat.size), "wall_s": wall,
            "p50_ms": float(np.percentile(flat, 50)), "p99_ms": float(np.percentile(flat, 99)),
            "added_p50_ms": float(np.percentile(extra, 50)), "added_p99_ms": float(np.percentile(extra, 99)),
            "actions_per_s": flat.size * 8 / wall, "replies_per_s": flat.size / wall,
            "mean_batch": (after["replies"] - before["replies"]) / batches if batches else float("nan")}


def direct_act(args):
    """`focusvla act --repeat` on the demo observation files: one forward, no server."""
    with tempfile.TemporaryDirectory() as tmp:
        from PIL import Image
        rng = np.random.default_rng(0)
        obs = observation(rng, 0)
        paths = []
        for i, key in enumerate(["observation/image", "observation/wrist_image"]):
            paths.append(os.path.join(tmp, f"{i}.png"))
            Image.fromarray(obs[key]).save(paths[-1])
        cmd = [args.cli, "act", "--checkpoint", args.checkpoint, "--image", paths[0], "--image", paths[1],
               "--instruction", obs["prompt"], "--proprio", ",".join(repr(float(v)) for v in obs["observation/state"]),
               "--device", "cuda" if args.device.startswith("cuda") else "cpu", "--repeat", str(args.act_repeat),
               "--json"]
        if args.unnorm_key:
            cmd += ["--unnorm-key", args.unnorm_key]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True)
        return json.loads(out.stdout)["repeat"]["total_ms"]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cli", required=True)
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--unnorm-key", default="")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--clients", default="1,4,16")
    ap.add_argument("--requests", type=int, default=3, help="timed requests per robot")
    ap.add_argument("--max-wait-ms", type=float, default=2)
    ap.add_argument("--max-batch", default="8,1", help="server --max-batch values to run (1: batching off)")
    ap.add_argument("--act-repeat", type=int, default=3)
    ap.add_argument("--json", default="")
    args = ap.parse_args()

    act = direct_act(args)
    print(f"focusvla act (no server), {args.act_repeat} calls: p50 {act['p50']:.1f} ms, min {act['min']:.1f} ms",
          flush=True)
    rows = []
    for max_batch in [int(b) for b in args.max_batch.split(",")]:
        proc, port, line = start_server(args, max_batch)
        print(line, flush=True)
        try:
            for clients in [int(c) for c in args.clients.split(",")]:
                r = run_clients(port, clients, args.requests, seed=clients)
                r["batching"] = f"on (max {max_batch})" if max_batch > 1 else "off"
                rows.append(r)
                print(f"  {clients:>2} robots, batching {r['batching']:<10}: p50 {r['p50_ms']:8.1f} ms  "
                      f"p99 {r['p99_ms']:8.1f} ms  added p50 {r['added_p50_ms']:7.1f} p99 {r['added_p99_ms']:7.1f} ms  "
                      f"{r['replies_per_s']:7.1f} replies/s  {r['actions_per_s']:7.1f} actions/s  mean batch "
                      f"{r['mean_batch']:.2f}  ({r['requests']} requests, {r['wall_s']:.1f} s)", flush=True)
        finally:
            proc.terminate()
            proc.wait(60)
    print("\n| robots | batching | p50 ms | p99 ms | added p50 ms | added p99 ms | replies/s | actions/s | mean batch |")
    print("|---:|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['clients']} | {r['batching']} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} | {r['added_p50_ms']:.1f} | "
              f"{r['added_p99_ms']:.1f} | {r['replies_per_s']:.1f} | {r['actions_per_s']:.1f} | {r['mean_batch']:.2f} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"act_ms": act, "rows": rows, "device": args.device, "checkpoint": args.checkpoint}, f, indent=1)


if __name__ == "__main__":
    main()
