"""focusvla.ray_serve on a local Ray cluster (2 CPUs, the tiny FocusVLA checkpoint; application
"focusvla" at / with two policy replicas and retries 1, "noretry" at /noretry with one replica and
retries 0), driven by openpi's own WebsocketClientPolicy (PyPI openpi-client, from .venv-openpi:
tests/python/ray_serve_clients.py), against `focusvla act` on the same observations.

1. The example config and the KubeRay manifest are valid Serve configs; argument errors are named.
2. `focusvla-ray serve CONFIG` starts the application; metadata as focusvla serve's, /healthz, bad
   input answered with named error frames on a connection that stays usable.
3. 16 concurrent clients x 25 requests: every reply correct (within the batched-GEMM tolerance) and
   its own observation's, none lost or duplicated, both replicas serving, batches formed.
4. One policy replica killed (ray.kill) while 16 clients run: every request in flight ends in a reply
   or an error frame at its client (none vanishes), later requests are served by the survivor and
   then by the restarted replica; recovery time (kill -> replica RUNNING) measured. With retries 1
   the killed replica's requests are completed by the survivor; with retries 0 (and no survivor)
   they get error frames, their connections carry on, and the restarted replica serves the next.

Numbers (latency p50 / p99, actions/s, recovery) are printed and written to ray_serve_numbers.json
in the working directory.

    run_ray_serve.sh SOURCE_DIR BUILD_DIR PYTHON TEST_DATA   (ctest ray_serve)
Environment: FOCUSVLA_CLI (focusvla, for `act`), FOCUSVLA_TEST_DATA, FOCUSVLA_OPENPI_PYTHON
(.venv-openpi's python), FOCUSVLA_RAY_CLI (default: focusvla-ray next to this python).
"""
import concurrent.futures
import contextlib
import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from serve_common import (IMAGE_KEYS, TASKS, UNNORM, die_with_parent, relative_error,  # noqa: E402
                          smooth_image)
from serve_common import act_cli as _act_cli  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
CLI = os.environ.get("FOCUSVLA_CLI", str(ROOT / "build" / "focusvla"))
DATA = Path(os.environ.get("FOCUSVLA_TEST_DATA", Path(CLI).parent / "test_data")) / "policy"
FOCUS = DATA / "focus_f32"  # FocusVLA head, 2 cameras, proprio 8, fp32
OPENPI_PYTHON = os.environ.get("FOCUSVLA_OPENPI_PYTHON", str(ROOT / ".venv-openpi" / "bin" / "python"))
RAY_CLI = os.environ.get("FOCUSVLA_RAY_CLI", str(Path(sys.executable).parent / "focusvla-ray"))
CLIENTS_SCRIPT = Path(__file__).resolve().parent / "ray_serve_clients.py"
HOST = "127.0.0.1"

# As tests/python/test_serve.py: batched replies vs `focusvla act` (batch of one), max |got - want| /
# max |want|; measured 9.3e-8 .. 1.9e-7 on these checkpoints; observations 20 tolerances apart.
BATCHED_TOLERANCE = 1e-6
DISTINCT_FACTOR = 20
K = 16
CLIENTS, REQUESTS = 16, 25
READY_TIMEOUT_S = 240  # Ray + 3 replicas importing torch on a busy 2-core machine: ~15-40 s
RECOVERY_LIMIT_S = 90
NUMBERS = {}
# The test's Ray instance authenticates with a token of its own (nothing read from or written to
# ~/.ray): the focusvla-ray subprocess and this process's driver both get it.
os.environ.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=secrets.token_hex(32), RAY_USAGE_STATS_ENABLED="0")
for _name in ("RAY_ADDRESS", "RAY_AUTH_TOKEN_PATH"):
    os.environ.pop(_name, None)


def free_port():
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


# ----------------------------------------------------------------------------------------------
# Observations and the `focusvla act` oracle (as test_serve.py)


def act_cli(workdir, images, prompt, state):
    return _act_cli(CLI, workdir, FOCUS, images, prompt, state, extra=("--threads", "1"))


def make_observations(work):
    """K distinct observations (seeded; mostly flat images at distinct brightness levels, as the
    tiny checkpoint barely reacts to pixel noise), their npz for the clients, `focusvla act`'s actions."""
    rng = np.random.default_rng(20240611)
    levels = rng.permutation(K) * 16 + 8
    obs = []
    for k in range(K):
        state = rng.uniform(-0.5, 0.5, 8)
        obs.append({
            "observation/image": smooth_image(rng, 224, 224, levels[k]),
            "observation/wrist_image": smooth_image(rng, 224, 224, levels[k]),
            "observation/state": state if k % 2 == 0 else state.astype(np.float32),
            "prompt": TASKS[k],
        })
    npz = work / "observations.npz"
    np.savez(npz, **{f"{k}/{key}": np.asarray(value) for k, o in enumerate(obs) for key, value in o.items()})
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        expected = list(pool.map(lambda k: act_cli(work / f"obs{k}", [obs[k][key] for key in IMAGE_KEYS],
                                                   obs[k]["prompt"], obs[k]["observation/state"]), range(K)))
    distances = [relative_error(expected[i], expected[j]) for i in range(K) for j in range(K) if i != j]
    assert min(distances) > DISTINCT_FACTOR * BATCHED_TOLERANCE, f"observations too alike: {min(distances):.3e}"
    return obs, npz, expected


# ----------------------------------------------------------------------------------------------
# The cluster: `focusvla-ray serve CONFIG` in a subprocess


def descendants(pid):
    """Every process below pid (from /proc)."""
    children = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
                ppid = int(stat.rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def rss_mib(pids):
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
    return total / 1024


class Cluster:
    def __init__(self, work):
        self.work = work
        self.port = free_port()
        config = {
            "proxy_location": "HeadOnly",
            "http_options": {"host": HOST, "port": self.port},
            # The main app pads batches to buckets and warms them up (the replies are still each
            # request's own actions, within the batched tolerance); the other runs as given.
            "applications": [self._app("focusvla", "/", replicas=2, retries=1,
                                       batch_buckets=[1, 2, 4, 8], warmup_instructions=[TASKS[0]]),
                             self._app("noretry", "/noretry", replicas=1, retries=0)],
        }
        self.config_path = work / "serve_config.yaml"
        self.config_path.write_text(yaml.safe_dump(config, sort_keys=False))
        self.out_path, self.err_path = work / "focusvla-ray.stdout", work / "focusvla-ray.stderr"
        env = {k: v for k, v in os.environ.items() if k != "FOCUSVLA_API_KEY"}
        with open(self.out_path, "wb") as out, open(self.err_path, "wb") as err:
            self.proc = subprocess.Popen(
                [RAY_CLI, "serve", str(self.config_path), "--num-cpus", "2", "--no-dashboard",
                 "--object-store-mb", "128"], stdin=subprocess.DEVNULL, stdout=out, stderr=err, env=env,
                cwd=work, preexec_fn=die_with_parent)
        self.started = time.monotonic()
        self.gcs = None
        self.seen_pids = set()

    @staticmethod
    def _app(name, prefix, replicas, retries, **args):
        """An application of the tiny FocusVLA checkpoint on the CPU (1 thread per replica)."""
        return {"name": name, "route_prefix": prefix, "import_path": "focusvla.ray_serve:build_app",
                "args": {"checkpoint": str(FOCUS), "unnorm_key": UNNORM, "device": "cpu", "threads": 1,
                         "max_batch": 8, "max_wait_ms": 5, "retries": retries, "request_timeout_s": 60, **args},
                "deployments": [{"name": "FocusVLAPolicy", "num_replicas": replicas, "health_check_period_s": 1,
                                 "ray_actor_options": {"num_cpus": 0.5}}]}

    def log_tail(self, n=60):
        return "\n".join(self.err_path.read_text(errors="replace").splitlines()[-n:])

    def wait_ready(self):
        deadline = self.started + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            text = self.out_path.read_text(errors="replace")
            apps = dict(re.findall(r"focusvla-ray: serving (\S+) on ws://\S+ \((\d+) FocusVLAPolicy replicas; Ray at", text))
            m = re.search(r"Ray at (\S+)\)\n", text)
            if len(apps) == 2 and m:
                self.gcs = m.group(1)
                self.ready_s = time.monotonic() - self.started
                assert apps == {"focusvla": "2", "noretry": "1"}, text
                assert f"serving noretry on ws://{HOST}:{self.port}/noretry " in text, text
                return
            if self.proc.poll() is not None:
                raise AssertionError(f"focusvla-ray exited {self.proc.returncode} before serving:\n{self.log_tail()}")
            time.sleep(0.2)
        raise AssertionError(f"focusvla-ray not serving after {READY_TIMEOUT_S} s:\n{self.log_tail()}")

    def track(self):
        self.seen_pids.update(descendants(self.proc.pid))
        return rss_mib(descendants(self.proc.pid) + [self.proc.pid])

    def http(self, path):
        with urllib.request.urlopen(f"http://{HOST}:{self.port}{path}", timeout=10) as r:
            return r.status, r.read().decode()

    def stop(self, timeout=60):
        """SIGTERM (the CLI shuts the applications and Ray down), then make sure nothing it
        started is left: -> the pids that had to be killed."""
        self.track()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        leftover = []
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            leftover = [pid for pid in self.seen_pids if Path(f"/proc/{pid}").exists() and not _zombie(pid)]
            if not leftover:
                return []
            time.sleep(0.5)
        for pid in leftover:  # ours, by pid
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        return leftover


def _zombie(pid):
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


_CLUSTERS = []


def _on_sigterm(signum, _frame):
    """An outer timeout: stop the cluster through its CLI, then leave."""
    for cluster in _CLUSTERS:
        cluster.stop(timeout=20)
    os._exit(128 + signum)


signal.signal(signal.SIGTERM, _on_sigterm)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """The cluster (started first: it boots while `focusvla act` computes the expected actions),
    the observations, and a Ray driver attached to the cluster (to kill a replica, read serve.status)."""
    work = tmp_path_factory.mktemp("ray")
    cluster = Cluster(work)
    _CLUSTERS.append(cluster)
    driver = False
    try:
        obs, npz, expected = make_observations(work)
        cluster.wait_ready()
        NUMBERS["ready_s"] = round(cluster.ready_s, 1)
        import ray

        ray.init(address=cluster.gcs, namespace="serve", log_to_driver=False, logging_level="ERROR")
        driver = True
        yield cluster, obs, npz, expected
        assert cluster.proc.poll() is None, f"focusvla-ray exited during the tests:\n{cluster.log_tail()}"
    finally:
        if driver:
            import ray

            ray.shutdown()
        peak = NUMBERS.get("cluster_rss_mib")
        leftover = cluster.stop()
        print(f"\nfocusvla-ray: exit {cluster.proc.returncode}; cluster RSS peak {peak} MiB")
        assert cluster.proc.returncode == 0, f"focusvla-ray exit status {cluster.proc.returncode}:\n{cluster.log_tail()}"
        assert not leftover, f"processes of the cluster still running after focusvla-ray exited: {leftover}"
        Path("ray_serve_numbers.json").write_text(json.dumps(NUMBERS, indent=2) + "\n")


def run_clients(cluster, npz, extra, timeout_s, on_line=None, clients=CLIENTS, path=""):
    """ray_serve_clients.py under .venv-openpi -> (metadata, records, done line)."""
    args = [OPENPI_PYTHON, str(CLIENTS_SCRIPT), "--port", str(cluster.port), "--path", path, "--observations",
            str(npz), "--clients", str(clients), *map(str, extra)]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=die_with_parent)
    stderr = []
    threading.Thread(target=lambda: stderr.extend(proc.stderr), daemon=True).start()
    timer = threading.Timer(timeout_s, proc.kill)
    timer.start()
    metadata, records, done = None, [], None
    try:
        for line in proc.stdout:
            record = json.loads(line)
            if record["event"] == "metadata":
                metadata = record["metadata"]
            elif record["event"] == "done":
                done = record
            else:
                records.append(record)
            if on_line:
                on_line(record)
        proc.wait(timeout=30)
    finally:
        timer.cancel()
        if proc.poll() is None:
            proc.kill()
    assert done is not None, f"the clients ended without a done line (exit {proc.returncode}):\n{''.join(stderr)[-3000:]}"
    hung = [r for r in records if r["event"] == "hung"]
    assert not hung and done["hung"] == 0 and proc.returncode == 0, (
        f"requests with no reply and no error after their timeout: {hung}\n{cluster.log_tail()}")
    return metadata, records, done


def check_replies(records, expected):
    """Each reply is its own observation's actions within the tolerance -> worst relative error."""
    worst = 0.0
    for r in records:
        if r["event"] != "reply":
            continue
        actions = np.asarray(r["actions"], dtype=np.float64)
        assert r["dtype"] == "float64" and actions.shape == (8, 7), r
        errors = [relative_error(actions, e) for e in expected]
        assert errors[r["k"]] <= BATCHED_TOLERANCE, f"client {r['c']} request {r['i']}: {errors[r['k']]:.3e}"
        assert int(np.argmin(errors)) == r["k"], f"client {r['c']} request {r['i']}: another observation's actions"
        worst = max(worst, errors[r["k"]])
    return worst


def check_sequences(records):
    """Every client's requests 0 .. n-1 each ended exactly once (reply or error): none vanished."""
    by_client = {}
    for r in records:
        by_client.setdefault(r["c"], []).append(r["i"])
    for c, seq in by_client.items():
        assert sorted(seq) == list(range(len(seq))), f"client {c}: requests missing or repeated"
    return by_client


# ----------------------------------------------------------------------------------------------
# 1. Configs


def test_example_config_and_kuberay_manifest_are_valid():
    from ray.serve.schema import ServeDeploySchema

    from focusvla import ray_serve

    config, schema = ray_serve.cli._load_config(str(ROOT / "examples/ray/serve_config.yaml"))
    assert [a.import_path for a in schema.applications] == ["focusvla.ray_serve:build_app"]
    names = {d["name"] for d in config["applications"][0].get("deployments", [])}
    assert names <= {"FocusVLAPolicy", "FocusVLAIngress"}, names
    config, schema = ray_serve.cli._load_config(str(ROOT / "examples/ray/serve_config.yaml"),
                                            ["max_batch=16", "device=cpu"], replicas=3, port=9000)
    app = config["applications"][0]
    assert app["args"]["max_batch"] == 16 and schema.http_options.port == 9000
    policy = next(d for d in app["deployments"] if d["name"] == "FocusVLAPolicy")
    assert policy["num_replicas"] == 3 and "autoscaling_config" not in policy

    manifest = yaml.safe_load((ROOT / "examples/ray/rayservice.yaml").read_text())
    assert manifest["kind"] == "RayService" and manifest["apiVersion"].startswith("ray.io/")
    serve_config = yaml.safe_load(manifest["spec"]["serveConfigV2"])
    ServeDeploySchema.model_validate(serve_config)
    args = serve_config["applications"][0]["args"]
    ray_serve.PolicyOptions(**args)

    with pytest.raises(ValueError, match="unknown argument.*max_batches.*known: checkpoint"):
        ray_serve.PolicyOptions(checkpoint="x", max_batches=3)
    with pytest.raises(ValueError, match="checkpoint is required"):
        ray_serve.PolicyOptions()
    with pytest.raises(ValueError, match="max_batch 0"):
        ray_serve.PolicyOptions(checkpoint="x", max_batch=0)
    with pytest.raises(ValueError, match="batch_buckets must be batch sizes"):
        ray_serve.PolicyOptions(checkpoint="x", batch_buckets=[0, 2])
    with pytest.raises(ValueError, match="warmup_instructions must be non-empty"):
        ray_serve.PolicyOptions(checkpoint="x", warmup_instructions=[" "])


def test_bad_config_is_refused_before_ray_starts(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"applications": [{"name": "a", "import_path": "focusvla.ray_serve:build_app",
                                                      "args": {"checkpoint": str(FOCUS), "max_wait": 3}}]}))
    out = subprocess.run([RAY_CLI, "serve", str(bad)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "max_wait" in out.stderr and "known:" in out.stderr, out.stderr
    missing = tmp_path / "missing.yaml"
    missing.write_text(yaml.safe_dump({"applications": [{"name": "a", "import_path": "focusvla.ray_serve:build_app",
                                                          "args": {"checkpoint": str(tmp_path / "nope")}}]}))
    out = subprocess.run([RAY_CLI, "serve", str(missing)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and str(tmp_path / "nope") in out.stderr, out.stderr


def test_image_keys_of_a_policy_without_a_camera_count():
    """A checkpoint without num_images_in_input (the released VLA-Adapter config.json): the policy's
    num_images is 0, the image keys fix the count (default: focusvla serve's two LIBERO keys)."""
    from focusvla.ray_serve import resolve_image_keys
    assert resolve_image_keys(0, None) == ["observation/image", "observation/wrist_image"]
    assert resolve_image_keys(0, ["cam"]) == ["cam"]
    assert resolve_image_keys(1, None) == ["observation/image"]
    with pytest.raises(RuntimeError, match="image keys: 1 for a policy with 2 camera"):
        resolve_image_keys(2, ["cam"])


# ----------------------------------------------------------------------------------------------
# 2. Protocol


def test_metadata_health_and_errors(setup):
    import websockets.sync.client

    from focusvla.ray_serve import packb, unpackb

    cluster, obs, _, expected = setup
    assert cluster.http("/healthz") == (200, "OK\n") and cluster.http("/noretry/healthz") == (200, "OK\n")
    good = obs[3]
    with websockets.sync.client.connect(f"ws://{HOST}:{cluster.port}", compression=None, max_size=None,
                                        open_timeout=30) as ws:
        meta = unpackb(ws.recv(timeout=30))
        assert meta["server"] == "focusvla" and meta["backend"] == "ray-serve" and meta["replicas"] == 2, meta
        assert (meta["head"], meta["chunk"], meta["action_dim"], meta["cameras"], meta["proprio_dim"]) == \
            ("focusvla", 8, 7, 2, 8), meta
        assert list(meta["image_keys"]) == IMAGE_KEYS and meta["state_key"] == "observation/state", meta
        assert (meta["prompt_key"], meta["max_batch"], meta["max_wait_ms"]) == ("prompt", 8, 5), meta
        assert meta["settings"]["unnorm_key"] == UNNORM and meta["max_frame_bytes"] == 8 << 20, meta
        assert meta["settings"]["batch_buckets"] == [1, 2, 4, 8], meta["settings"]
        bad = [
            (b"\xc1garbage", ("invalid msgpack",)),
            (packb({k: v for k, v in good.items() if k != "prompt"}), ("prompt", "missing")),
            (packb({k: v for k, v in good.items() if k != "observation/wrist_image"}), ("observation/wrist_image",)),
            (packb(dict(good, prompt=42)), ("prompt", "string")),
            (packb(dict(good, prompt=" ")), ("prompt", "empty")),
            (packb(dict(good, **{"observation/image": good["observation/image"].astype(np.float32)})),
             ("observation/image", "uint8", "float32 (224, 224, 3)")),
            (packb(dict(good, **{"observation/state": np.zeros(7)})), ("observation/state", "8 numbers", "(7,)")),
            (packb(dict(good, **{"observation/state": np.array([0.1] * 7 + [np.nan])})),
             ("observation/state[7]", "NaN")),
            (packb([1, 2, 3]), ("expected a map", "a list")),
            ("a text frame", ("binary", "text frame")),
        ]
        for payload, words in bad:
            ws.send(payload)
            reply = ws.recv(timeout=30)
            assert isinstance(reply, str), f"a bad request got a binary reply ({words})"
            for word in words:
                assert word in reply, f"error {reply!r} does not name {word!r}"
            ws.send(packb(good))  # the same connection serves the next request
            reply = ws.recv(timeout=60)
            assert isinstance(reply, bytes), reply
            reply = unpackb(reply)
            assert relative_error(reply["actions"], expected[3]) <= BATCHED_TOLERANCE
        assert set(reply) == {"actions", "server_timing", "replica"}, reply.keys()
        # Named and ordered as `focusvla serve` names them (test_serve.py's TIMING_KEYS).
        keys = ["infer_ms", "queue_ms", "decode_ms", "batch_size", "preprocess_ms", "vision_ms", "projector_ms",
                "llm_ms", "head_ms", "device_ms", "total_ms", "prev_total_ms"]
        assert list(reply["server_timing"]) == keys, list(reply["server_timing"])
        for key in keys:
            assert isinstance(reply["server_timing"][key], float), (key, reply["server_timing"])
    status, body = cluster.http("/stats")
    stats = json.loads(body)
    assert status == 200 and stats["errors"] >= len(bad) and stats["replies"] >= len(bad), stats


# ----------------------------------------------------------------------------------------------
# 3. 16 concurrent clients


def test_concurrent_clients(setup):
    cluster, _, npz, expected = setup
    metadata, records, done = run_clients(cluster, npz, ["--requests", REQUESTS], timeout_s=300)
    assert metadata["server"] == "focusvla" and metadata["replicas"] == 2, metadata
    errors = [r for r in records if r["event"] == "error"]
    assert not errors, errors[:5]
    by_client = check_sequences(records)
    assert len(by_client) == CLIENTS and all(len(s) == REQUESTS for s in by_client.values())
    worst = check_replies(records, expected)
    replicas = {r["replica"] for r in records}
    sizes = [r["timing"]["batch_size"] for r in records]
    assert len(replicas) == 2, f"replies from {replicas}: both replicas should serve"
    assert max(sizes) > 1, "no request was batched with another"
    latencies = np.array([(r["t1"] - r["t0"]) * 1e3 for r in records])
    wall = max(r["t1"] for r in records) - min(r["t0"] for r in records)
    NUMBERS.update(clients=CLIENTS, requests=len(records), latency_p50_ms=round(float(np.percentile(latencies, 50)), 1),
                   latency_p99_ms=round(float(np.percentile(latencies, 99)), 1),
                   actions_per_s=round(len(records) * 8 / wall, 1), replies_per_s=round(len(records) / wall, 1),
                   mean_batch=round(float(np.mean(sizes)), 2), max_relative_error=worst,
                   cluster_rss_mib=round(cluster.track()))
    print(f"\n{CLIENTS} clients x {REQUESTS} requests through Ray Serve (2 CPU replicas): {wall:.1f} s, latency p50 "
          f"{NUMBERS['latency_p50_ms']} ms p99 {NUMBERS['latency_p99_ms']} ms, {NUMBERS['actions_per_s']} actions/s, "
          f"mean batch {NUMBERS['mean_batch']}, max relative error {worst:.2e}, replies per replica "
          f"{ {rep: sum(r['replica'] == rep for r in records) for rep in replicas} }")


# ----------------------------------------------------------------------------------------------
# 4. A replica killed mid-run


def policy_replicas(app):
    """{replica id: actor name} of the live FocusVLAPolicy replicas of `app` (named actors, namespace serve)."""
    import ray

    prefix = f"SERVE_REPLICA::{app}#FocusVLAPolicy#"
    out = {}
    for entry in ray.util.list_named_actors(all_namespaces=True):
        name = entry["name"] if isinstance(entry, dict) else entry
        if name.startswith(prefix):
            out[name[len(prefix):]] = name
    return out


def running_policy_replicas(app):
    from ray import serve

    status = serve.status().applications.get(app)
    if status is None or "FocusVLAPolicy" not in status.deployments:
        return 0
    return int(status.deployments["FocusVLAPolicy"].replica_states.get("RUNNING", 0))


def kill_mid_run(cluster, npz, app, path, replicas, clients, tmp_path):
    """Clients run; once they have 4 replies each, the replica that served the latest is killed
    (ray.kill); recovery is a new replica RUNNING (serve.status) with `replicas` again; the clients go
    on until the new replica served 16 requests. -> dict of what happened."""
    import ray

    stop_file = tmp_path / f"stop-{app}"
    lock = threading.Lock()
    seen = []

    def on_line(record):
        with lock:
            seen.append(record)

    def served(replica=None):
        with lock:
            return [r for r in seen if r["event"] == "reply" and replica in (None, r["replica"])]

    result = {}
    stats_before = json.loads(cluster.http(f"{path}/stats")[1])
    runner = threading.Thread(target=lambda: result.update(out=run_clients(
        cluster, npz, ["--stop-file", stop_file, "--max-s", 200], timeout_s=260, on_line=on_line, clients=clients,
        path=path)), daemon=True)
    runner.start()
    try:
        deadline = time.monotonic() + 120
        while len(served()) < 4 * clients:
            assert runner.is_alive() and time.monotonic() < deadline, f"no {4 * clients} replies: {result}"
            time.sleep(0.05)
        before = policy_replicas(app)
        assert len(before) == replicas, before
        victim = served()[-1]["replica"]
        t_kill = time.time()
        ray.kill(ray.get_actor(before[victim], namespace="serve"), no_restart=False)
        deadline = time.monotonic() + RECOVERY_LIMIT_S
        new = None
        while time.monotonic() < deadline:
            fresh = [r for r in policy_replicas(app) if r not in before]
            if fresh and running_policy_replicas(app) == replicas:
                new = fresh[0]
                break
            time.sleep(0.1)
        t_recovered = time.time()
        assert new is not None, f"no new {app} replica RUNNING within {RECOVERY_LIMIT_S} s\n{cluster.log_tail()}"
        deadline = time.monotonic() + 60
        while len(served(new)) < 16 and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(1.0)
        NUMBERS["cluster_rss_mib"] = max(NUMBERS.get("cluster_rss_mib", 0), round(cluster.track()))
    finally:
        stop_file.touch()
        runner.join(timeout=120)
    assert "out" in result, "the clients did not finish"
    _, records, done = result["out"]
    stats = json.loads(cluster.http(f"{path}/stats")[1])
    return dict(records=records, done=done, victim=victim, new=new, before=before, t_kill=t_kill,
                t_recovered=t_recovered, recovery_s=t_recovered - t_kill,
                failures=stats["replica_failures"] - stats_before["replica_failures"],
                retries=stats["retries"] - stats_before["retries"])


def check_kill(run, expected, app):
    """Every request ended in a reply or an error (check_sequences, no hung one: run_clients), every
    reply correct; errors are error frames on connections that stay open; after recovery all
    served, the restarted replica among them. -> (in flight at the kill, errors)."""
    records = run["records"]
    check_sequences(records)
    check_replies(records, expected)
    errors = [r for r in records if r["event"] == "error"]
    for r in errors:
        assert r["error"].startswith("RuntimeError: Error in inference server:\npolicy: the replica serving this "
                                     "request failed"), r
    assert run["done"]["reconnects"] == 0, "a connection was lost: a replica's death must cost requests only"
    in_flight = [r for r in records if r["t0"] <= run["t_kill"] <= r["t1"]]
    after = [r for r in records if r["t0"] > run["t_recovered"] + 1.0]
    assert in_flight and after
    assert all(r["event"] == "reply" for r in after), [r for r in after if r["event"] != "reply"][:3]
    assert run["new"] in {r["replica"] for r in after}, f"{app}: the restarted replica served nothing after recovery"
    assert run["victim"] not in {r["replica"] for r in records if r["event"] == "reply" and r["t0"] > run["t_kill"] + 0.5}
    assert run["failures"] >= 1, f"{app}: the killed replica held no request: nothing was tested"
    return in_flight, errors


def test_replica_killed_mid_run(setup, tmp_path):
    """Two replicas, retries 1: the killed replica's requests go to the survivor; none fails."""
    cluster, _, npz, expected = setup
    run = kill_mid_run(cluster, npz, "focusvla", "", 2, CLIENTS, tmp_path)
    in_flight, errors = check_kill(run, expected, "focusvla")
    records = run["records"]
    survivor = next(r for r in run["before"] if r != run["victim"])
    assert survivor in {r["replica"] for r in records if r["event"] == "reply" and r["t0"] > run["t_kill"]}
    assert run["retries"] == run["failures"], "every request the victim held is retried once"
    latencies = [(r["t1"] - r["t0"]) * 1e3 for r in records if r["event"] == "reply"]
    NUMBERS.update(recovery_s=round(run["recovery_s"], 1), kill_requests=len(records), kill_errors=len(errors),
                   kill_in_flight=len(in_flight), kill_victim_held=run["failures"], kill_retried=run["retries"],
                   kill_max_latency_ms=round(max(latencies), 1))
    print(f"\nfocusvla (2 replicas, retries 1): replica {run['victim']} killed with {len(in_flight)} requests in flight "
          f"({run['failures']} held by it, all retried on the survivor): {len(errors)} errors over {len(records)} "
          f"requests; new replica {run['new']} RUNNING {run['recovery_s']:.1f} s after the kill; worst latency "
          f"{max(latencies):.0f} ms")


def test_replica_killed_without_retries(setup, tmp_path):
    """One replica, retries 0: the killed replica's requests get error frames, their connections
    stay open, and the restarted replica serves the next requests (queued meanwhile)."""
    cluster, _, npz, expected = setup
    run = kill_mid_run(cluster, npz, "noretry", "/noretry", 1, 8, tmp_path)
    in_flight, errors = check_kill(run, expected, "noretry")
    records = run["records"]
    assert run["retries"] == 0 and len(errors) == run["failures"] >= 1, (run["failures"], errors)
    for e in errors:  # the client's next request, on the same connection, got a reply
        later = [r for r in records if r["c"] == e["c"] and r["i"] > e["i"]]
        assert later and later[0]["event"] == "reply", (e, later[:1])
    NUMBERS.update(noretry_recovery_s=round(run["recovery_s"], 1), noretry_requests=len(records),
                   noretry_errors=len(errors), noretry_in_flight=len(in_flight))
    print(f"\nnoretry (1 replica, retries 0): replica {run['victim']} killed with {len(in_flight)} requests in "
          f"flight: {len(errors)} error frames, {len(in_flight) - len(errors)} replies; new replica {run['new']} "
          f"RUNNING {run['recovery_s']:.1f} s after the kill; {len(records)} requests, none lost")
