"""focusvla.ray_serve: `focusvla serve`'s openpi websocket protocol on a Ray Serve cluster.

One `focusvla serve` process saturates one GPU. For a fleet of robots, or a batched simulation
evaluation that outgrows one machine, this module runs the same policy server as a Ray Serve
application: replicas across GPUs and nodes, dynamic batching (`@serve.batch`), autoscaling,
restarts of failed replicas, KubeRay on Kubernetes. Robot clients do not change: the ingress speaks
the protocol of `focusvla serve` (openpi's `WebsocketPolicyServer`):

    connect       -> the metadata (a msgpack map: the keys of `focusvla serve`'s, plus "backend",
                     "replicas", "ray_version")
    binary frame  -> a request: a msgpack map whose numpy arrays are openpi_client.msgpack_numpy's
    <- binary     {"actions": float64 (chunk, action_dim), "server_timing": {...}, "replica": id}
    <- text       an error naming the key and the problem; the connection stays open
    GET /healthz  -> "OK"          GET /stats -> this ingress replica's counters (JSON)

Two deployments make the application (`build_app`, the import path of a Serve config file):

    FocusVLAIngress  FastAPI websocket ingress: decodes and validates each request (the messages of
                     focusvla serve's decoder), sends it to a policy replica through a Serve handle,
                     encodes the reply. It holds no model; connections live here, so a policy
                     replica that dies costs only the requests it held (retried on another replica,
                     else an error frame to their clients), never a connection.
    FocusVLAPolicy   one focusvla.Policy per replica (one GPU: num_gpus 1, or the CPU); concurrent
                     requests are batched into one `act_batch` by `@serve.batch` (max_batch,
                     max_wait_ms), run on a worker thread (the binding releases the GIL).

Start it with `focusvla-ray serve CONFIG` (this module's `main`) or Ray's own `serve run CONFIG`;
examples/ray/serve_config.yaml documents every argument, README "Fleet scale: Ray Serve" the path
from one machine to a cluster.
"""

import argparse
import asyncio
import concurrent.futures
import os
import signal
import sys
import threading
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

import msgpack
import numpy as np

try:
    import ray
    from fastapi import FastAPI, WebSocket
    from fastapi.responses import JSONResponse, PlainTextResponse
    from ray import serve
    from ray.serve.handle import DeploymentHandle
except ImportError as _e:  # pragma: no cover - the message is the point
    raise ImportError(
        f"focusvla.ray_serve needs Ray Serve ({_e}): pip install 'ray[serve]==2.60.0' "
        "(or pip install 'focusvla[ray]')"
    ) from _e

__all__ = ["RequestError", "decode_request", "encode_reply", "packb", "unpackb", "PolicyOptions",
           "FocusVLAPolicy", "FocusVLAIngress", "build_app", "app_args", "main"]

POLICY_DEPLOYMENT = "FocusVLAPolicy"
INGRESS_DEPLOYMENT = "FocusVLAIngress"
LIBERO_IMAGE_KEYS = ("observation/image", "observation/wrist_image")  # focusvla serve's defaults

# ------------------------------------------------------------------------------------------------
# openpi's wire format (openpi_client.msgpack_numpy, without depending on openpi-client)


def _pack_array(obj):
    """openpi_client.msgpack_numpy.pack_array: numpy arrays and scalars as msgpack maps."""
    if isinstance(obj, (np.ndarray, np.generic)) and obj.dtype.kind in ("V", "O", "c"):
        raise ValueError(f"Unsupported dtype: {obj.dtype}")
    if isinstance(obj, np.ndarray):
        return {b"__ndarray__": True, b"data": obj.tobytes(), b"dtype": obj.dtype.str, b"shape": obj.shape}
    if isinstance(obj, np.generic):
        return {b"__npgeneric__": True, b"data": obj.item(), b"dtype": obj.dtype.str}
    return obj


def _unpack_array(obj):
    """openpi_client.msgpack_numpy.unpack_array."""
    if b"__ndarray__" in obj:
        return np.ndarray(buffer=obj[b"data"], dtype=np.dtype(obj[b"dtype"]), shape=obj[b"shape"])
    if b"__npgeneric__" in obj:
        return np.dtype(obj[b"dtype"]).type(obj[b"data"])
    return obj


def packb(obj) -> bytes:
    """Byte-identical to openpi_client.msgpack_numpy.packb."""
    return msgpack.packb(obj, default=_pack_array)


def unpackb(data: bytes):
    """openpi_client.msgpack_numpy.unpackb (for clients and tests; the server decodes with
    decode_request, which validates)."""
    return msgpack.unpackb(data, object_hook=_unpack_array)


# ------------------------------------------------------------------------------------------------
# Requests: focusvla serve's own decoder (src/serve/msgpack_numpy.cpp, through the native module), so
# both front ends accept the same requests and answer the same errors.

from ._core import RequestError  # noqa: E402  (a ValueError: the message names the key and the problem)


def decode_request(data: bytes, image_keys: Sequence[str], state_key: Optional[str], prompt_key: str,
                   proprio_dim: int, max_image_side: int = 4096, max_prompt_bytes: int = 4096) -> Dict[str, Any]:
    """One request frame -> {"images": [uint8 (H, W, 3)], "instruction": str, "proprio": float64 or
    None} (focusvla.Policy.act_batch's observation). Raises RequestError with focusvla serve's
    message for the first problem found."""
    from ._core import decode_request as _decode
    return _decode(bytes(data), list(image_keys), state_key, prompt_key, proprio_dim, max_image_side,
                   max_prompt_bytes)


def encode_reply(actions: np.ndarray, server_timing: Dict[str, float], replica: Optional[str] = None) -> bytes:
    """{"actions": float64 (chunk, action_dim), "server_timing": {name: float}[, "replica": id]}, as
    openpi's packb writes it (every timing value a float64, as focusvla serve writes them)."""
    reply: Dict[str, Any] = {"actions": np.ascontiguousarray(actions, dtype=np.float64),
                             "server_timing": {k: float(v) for k, v in server_timing.items()}}
    if replica is not None:
        reply["replica"] = replica
    return packb(reply)


def resolve_image_keys(cameras: int, image_keys: Optional[List[str]]) -> List[str]:
    """The request key of each camera: image_keys, else focusvla serve's defaults (LIBERO's). cameras
    is the policy's num_images; 0 (a config.json without num_images_in_input, as the released
    VLA-Adapter checkpoints) takes any count, so the keys fix it (default: LIBERO's two)."""
    if cameras == 0:
        return list(image_keys) if image_keys else list(LIBERO_IMAGE_KEYS)
    keys = list(image_keys) if image_keys else list(LIBERO_IMAGE_KEYS[:cameras])
    if len(keys) != cameras:
        raise RuntimeError(f"image keys: {len(keys)} for a policy with {cameras} camera(s): name one "
                           "per camera in image_keys, in the checkpoint's order")
    return keys


# ------------------------------------------------------------------------------------------------
# Options (the application's `args` in a Serve config file)


class PolicyOptions:
    """The arguments of build_app, checked; unknown names are an error listing the known ones."""

    # name: (default, type or None for "any of the listed")
    FIELDS: Dict[str, Tuple[Any, Any]] = {
        # the policy (focusvla.Policy.load; as `focusvla serve`'s options)
        "checkpoint": (None, str),
        "unnorm_key": (None, str),
        "device": ("auto", str),          # auto | cpu | cuda | cuda:N
        "dtype": (None, str),             # None: the checkpoint's where native, float32 elsewhere
        "prompt_format": ("auto", str),
        "center_crop": (True, bool),
        "jpeg_roundtrip": (True, bool),   # TF's JPEG round trip before the LIBERO resize (non-224 cameras)
        "quantize": ("none", str),        # none | int8 (CPU W8A8, CUDA weight-only) | fp8 (CUDA 8.9+)
        "threads": (0, int),              # CPU intra-op threads per replica (0: LibTorch's default)
        "cuda_graphs": (True, bool),
        # batching (per policy replica)
        "max_batch": (8, int),
        "max_wait_ms": (2.0, float),
        # the protocol (as focusvla serve's --image-key, --state-key, --prompt-key, --max-frame-mb)
        "image_keys": (None, list),
        "state_key": ("observation/state", str),
        "prompt_key": ("prompt", str),
        "max_frame_mb": (8.0, float),
        "max_image_side": (4096, int),
        "max_prompt_bytes": (4096, int),
        "api_key": (None, str),          # None: $FOCUSVLA_API_KEY of the ingress replica, else none
        # the ingress's calls to the policy replicas
        "request_timeout_s": (60.0, float),
        "retries": (1, int),              # a request whose replica died is sent again this often
    }

    def __init__(self, **kwargs):
        unknown = sorted(set(kwargs) - set(self.FIELDS))
        if unknown:
            raise ValueError(f"focusvla.ray_serve: unknown argument(s) {', '.join(unknown)}; known: "
                             f"{', '.join(self.FIELDS)}")
        for name, (default, kind) in self.FIELDS.items():
            value = kwargs.get(name, default)
            if value is not None:
                if kind is float and isinstance(value, int) and not isinstance(value, bool):
                    value = float(value)
                if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
                    raise ValueError(f"focusvla.ray_serve: {name} must be {kind.__name__}, got {value!r}")
            setattr(self, name, value)
        if not self.checkpoint:
            raise ValueError("focusvla.ray_serve: checkpoint is required (the checkpoint directory, on every node "
                             "that runs a policy replica)")
        # The policy options' spellings are the library's own (focusvla.canonical_option: the CLI, the
        # C ABI and Policy.load accept the same); checked here, on the ingress, for spelling only.
        from ._core import Error, canonical_option
        try:
            self.device = canonical_option("device", self.device, "focusvla.ray_serve: device")
            if self.dtype is not None:
                self.dtype = canonical_option("dtype", self.dtype, "focusvla.ray_serve: dtype")
            self.prompt_format = canonical_option("prompt_format", self.prompt_format,
                                                  "focusvla.ray_serve: prompt_format")
            self.quantize = canonical_option("quantize", self.quantize, "focusvla.ray_serve: quantize")
        except Error as e:
            raise ValueError(str(e)) from None
        if not 1 <= self.max_batch <= 1024:
            raise ValueError(f"focusvla.ray_serve: max_batch {self.max_batch} is not in 1 .. 1024")
        if not 0 <= self.max_wait_ms <= 60000:
            raise ValueError(f"focusvla.ray_serve: max_wait_ms {self.max_wait_ms} is not in 0 .. 60000")
        if not 1 <= self.max_prompt_bytes <= (1 << 20):
            raise ValueError(f"focusvla.ray_serve: max_prompt_bytes {self.max_prompt_bytes} is not in 1 .. 1048576")
        if self.max_frame_mb * (1 << 20) < 1024:
            raise ValueError("focusvla.ray_serve: max_frame_mb below 1 KiB")
        if self.request_timeout_s <= 0 or self.retries < 0 or self.threads < 0:
            raise ValueError("focusvla.ray_serve: request_timeout_s must be positive, retries and threads >= 0")
        if self.image_keys is not None and (not self.image_keys or
                                            not all(isinstance(k, str) and k for k in self.image_keys)):
            raise ValueError("focusvla.ray_serve: image_keys must be a non-empty list of non-empty keys")

    def as_dict(self) -> Dict[str, Any]:
        return {name: getattr(self, name) for name in self.FIELDS}

    @property
    def max_frame_bytes(self) -> int:
        return int(self.max_frame_mb * (1 << 20))

    def wants_gpu(self) -> bool:
        if self.device.startswith("cuda"):
            return True
        if self.device == "auto":
            try:
                return ray.is_initialized() and ray.cluster_resources().get("GPU", 0) > 0
            except Exception:  # noqa: BLE001
                return False
        return False


# ------------------------------------------------------------------------------------------------
# The policy replicas


@serve.deployment(name=POLICY_DEPLOYMENT, max_ongoing_requests=32, health_check_period_s=2,
                  health_check_timeout_s=30, graceful_shutdown_timeout_s=20)
class FocusVLAPolicy:
    """One focusvla.Policy; concurrent `act` calls are batched into one act_batch."""

    def __init__(self, options: Dict[str, Any]):
        import focusvla  # the native module: only where a policy runs

        self.options = PolicyOptions(**options)
        o = self.options
        gpus = ray.get_gpu_ids() if ray.is_initialized() else []
        device = o.device
        if device == "auto":  # a GPU when this replica reserved one (ray_actor_options num_gpus)
            device = "cuda" if gpus else "cpu"
        elif device.startswith("cuda") and not gpus and ray.is_initialized():
            raise ValueError(f"device {device}, but this {POLICY_DEPLOYMENT} replica reserved no GPU: give it "
                             "ray_actor_options num_gpus: 1 in the config's deployments section")
        t0 = time.perf_counter()
        self.policy = focusvla.Policy.load(o.checkpoint, device=device, dtype=o.dtype, unnorm_key=o.unnorm_key,
                                           prompt_format=o.prompt_format, center_crop=o.center_crop,
                                           jpeg_roundtrip=o.jpeg_roundtrip, quantize=o.quantize,
                                           threads=o.threads, cuda_graphs=o.cuda_graphs)
        self.load_s = time.perf_counter() - t0
        self.act.set_max_batch_size(o.max_batch)
        self.act.set_batch_wait_timeout_s(o.max_wait_ms / 1000.0)
        # One thread runs the policy: batches never overlap (calls on one Policy are serialized anyway).
        self.executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="focusvla-act")
        try:
            context = serve.get_replica_context()
            self.replica = context.replica_id.unique_id
            self.actor_name = context.replica_id.to_full_id_str()
        except Exception:  # noqa: BLE001 - outside a replica (tests of the class itself)
            self.replica, self.actor_name = f"pid{os.getpid()}", None
        self.version = focusvla.__version__

    def info(self) -> Dict[str, Any]:
        p = self.policy
        return {"head": p.head_kind, "chunk": p.chunk_size, "action_dim": p.action_dim, "cameras": p.num_images,
                "proprio_dim": p.proprio_dim, "settings": dict(p.settings), "version": self.version,
                "replica": self.replica, "actor_name": self.actor_name, "pid": os.getpid(), "load_s": self.load_s}

    def _run(self, observations: List[Dict[str, Any]]) -> Tuple[List[Any], float]:
        t0 = time.perf_counter()
        try:
            results = self.policy.act_batch(observations, return_info=True)
        except Exception:  # noqa: BLE001 - one bad observation must not fail the others: one by one
            results = []
            for ob in observations:
                try:
                    results.append(self.policy.act(ob["images"], ob["instruction"], ob["proprio"], return_info=True))
                except Exception as e:  # noqa: BLE001
                    results.append(e)
        return results, (time.perf_counter() - t0) * 1e3

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.002)  # set from the options in __init__
    async def act(self, observations: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
        loop = asyncio.get_running_loop()
        results, infer_ms = await loop.run_in_executor(self.executor, self._run, observations)
        out = []
        for r in results:
            if isinstance(r, Exception):
                out.append({"error": f"policy: {r}", "replica": self.replica})
                continue
            actions, info = r
            t = info["timing"]
            out.append({"actions": actions, "replica": self.replica, "timing": {
                "infer_ms": infer_ms, "batch_size": float(len(observations)),
                "preprocess_ms": t["preprocess_ms"], "vision_ms": t["vision_ms"],
                "projector_ms": t["projector_ms"], "llm_ms": t["llm_ms"], "head_ms": t["head_ms"]}})
        return out


# ------------------------------------------------------------------------------------------------
# The ingress: openpi's websocket protocol


class _Stats:
    def __init__(self):
        self.lock = threading.Lock()
        self.counts = {"connections": 0, "open_connections": 0, "requests": 0, "replies": 0, "errors": 0,
                       "retries": 0, "replica_failures": 0}
        self.latencies_ms: List[float] = []

    def add(self, name: str, n: int = 1):
        with self.lock:
            self.counts[name] += n

    def reply(self, ms: float):
        with self.lock:
            self.counts["replies"] += 1
            self.latencies_ms.append(ms)
            if len(self.latencies_ms) > 10000:
                del self.latencies_ms[:5000]

    def totals(self) -> Dict[str, Any]:
        with self.lock:
            out: Dict[str, Any] = dict(self.counts)
            if self.latencies_ms:
                out["latency_p50_ms"] = float(np.percentile(self.latencies_ms, 50))
                out["latency_p99_ms"] = float(np.percentile(self.latencies_ms, 99))
            return out


try:
    from ray.serve.exceptions import RequestCancelledError as _Cancelled
except ImportError:  # pragma: no cover
    _Cancelled = ()
# A replica that died (ActorDiedError, ActorUnavailableError: RayActorError) or shut down while
# holding the request (a scale-down, a redeploy): the request is sent again.
_REPLICA_LOST = (ray.exceptions.RayActorError,) + ((_Cancelled,) if _Cancelled else ())


def _replica_lost(e: BaseException) -> bool:
    return isinstance(e, _REPLICA_LOST)


# (Helpers of the ingress are defined before it: @serve.ingress captures the class's globals when
# the class is defined.)


async def _await(response):
    return await response


async def _send_quietly(ws: WebSocket, text: str) -> bool:
    try:
        await ws.send_text(text)
        return True
    except Exception:  # noqa: BLE001
        return False


class _PrefixRootWebsocket:
    """ASGI middleware: a websocket to the route prefix itself (ws://host:8000/policy, as openpi's
    client connects to a URI without a trailing slash) reaches the "/" route, as ".../policy/" does."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] == "websocket":
            root = scope.get("root_path", "")
            if root and scope.get("path") == root:
                scope = dict(scope, path=root + "/")
        await self.app(scope, receive, send)


fastapi_app = FastAPI(title="focusvla (Ray Serve)", docs_url=None, redoc_url=None, openapi_url=None)
fastapi_app.add_middleware(_PrefixRootWebsocket)


@serve.deployment(name=INGRESS_DEPLOYMENT, max_ongoing_requests=4096, health_check_period_s=2,
                  ray_actor_options={"num_cpus": 0})
@serve.ingress(fastapi_app)
class FocusVLAIngress:
    """openpi's WebsocketPolicyServer protocol in front of the FocusVLAPolicy replicas. Every open
    websocket is one ongoing request of this deployment (hence max_ongoing_requests 4096)."""

    def __init__(self, policy: DeploymentHandle, options: Dict[str, Any]):
        self.policy = policy
        self.options = PolicyOptions(**options)
        key = self.options.api_key if self.options.api_key is not None else os.environ.get("FOCUSVLA_API_KEY")
        self.api_key = key or None
        self.stats = _Stats()
        self._info: Optional[Dict[str, Any]] = None
        self._info_lock = asyncio.Lock()
        self._replicas: Tuple[float, Optional[int]] = (0.0, None)

    async def _policy_info(self) -> Dict[str, Any]:
        if self._info is None:
            async with self._info_lock:
                if self._info is None:
                    info = await self.policy.info.remote()
                    o = self.options
                    info["image_keys"] = resolve_image_keys(info["cameras"], o.image_keys)
                    info["cameras"] = len(info["image_keys"])
                    self._info = info
        return self._info

    def _running_replicas(self) -> Optional[int]:
        """RUNNING policy replicas (serve.status, at most once a second)."""
        at, count = self._replicas
        if time.monotonic() - at > 1.0:
            try:
                context = serve.get_replica_context()
                app = serve.status().applications[context.app_name]
                states = app.deployments[POLICY_DEPLOYMENT].replica_states
                count = int(states.get("RUNNING", 0))
            except Exception:  # noqa: BLE001 - metadata without it rather than no metadata
                count = None
            self._replicas = (time.monotonic(), count)
        return count

    async def metadata(self) -> Dict[str, Any]:
        info = await self._policy_info()
        o = self.options
        return {"server": "focusvla", "version": info["version"], "protocol": "openpi websocket (msgpack_numpy)",
                "head": info["head"], "chunk": info["chunk"], "action_dim": info["action_dim"],
                "cameras": info["cameras"], "proprio_dim": info["proprio_dim"], "image_keys": info["image_keys"],
                "state_key": o.state_key if info["proprio_dim"] > 0 else None, "prompt_key": o.prompt_key,
                "max_batch": o.max_batch, "max_wait_ms": o.max_wait_ms, "max_frame_bytes": o.max_frame_bytes,
                "settings": info["settings"],
                "backend": "ray-serve", "ray_version": ray.__version__,
                "replicas": await asyncio.to_thread(self._running_replicas)}

    @fastapi_app.get("/healthz")
    def healthz(self):
        return PlainTextResponse("OK\n")

    @fastapi_app.get("/stats")
    def stats_endpoint(self):
        return JSONResponse(self.stats.totals())

    async def _infer(self, observation: Dict[str, Any]) -> Dict[str, Any]:
        """A policy replica's result for one observation; a replica that dies while holding it (or
        shuts down) is replaced by another try, `retries` times. Raises on the last failure."""
        attempt = 0
        while True:
            response = self.policy.act.remote(observation)
            try:
                return await asyncio.wait_for(_await(response), timeout=self.options.request_timeout_s)
            except asyncio.TimeoutError:
                response.cancel()
                raise RuntimeError(f"policy: no reply within {self.options.request_timeout_s:g} s "
                                   "(request_timeout_s)") from None
            except Exception as e:  # noqa: BLE001
                if not _replica_lost(e):
                    raise
                self.stats.add("replica_failures")
                if attempt >= self.options.retries:
                    raise RuntimeError(f"policy: the replica serving this request failed ({type(e).__name__}); "
                                       f"tried {attempt + 1} time(s); send it again") from None
                attempt += 1
                self.stats.add("retries")

    @fastapi_app.websocket("/")
    async def websocket(self, ws: WebSocket):
        if self.api_key is not None and ws.headers.get("authorization") != f"Api-Key {self.api_key}":
            await ws.close(code=1008, reason="missing or wrong API key")  # before accept: HTTP 403
            return
        await ws.accept()
        self.stats.add("connections")
        self.stats.add("open_connections")
        try:
            await self._serve_connection(ws)
        finally:
            self.stats.add("open_connections", -1)

    async def _serve_connection(self, ws: WebSocket):
        try:
            meta = await self.metadata()
        except Exception as e:  # noqa: BLE001
            await _send_quietly(ws, text=f"server: no policy replica answered ({type(e).__name__}: {e})")
            await ws.close(code=1011)
            return
        info = await self._policy_info()
        o = self.options
        await ws.send_bytes(packb(meta))
        prev_total_ms: Optional[float] = None
        while True:
            message = await ws.receive()
            if message["type"] == "websocket.disconnect":
                return
            received = time.perf_counter()
            self.stats.add("requests")
            data = message.get("bytes")
            if data is None:
                if not await self._error(ws, "request: expected a binary msgpack frame (openpi protocol), got a text "
                                             "frame"):
                    return
                continue
            if len(data) > o.max_frame_bytes:
                await self._error(ws, f"request: frame over the size limit of {o.max_frame_bytes} bytes "
                                      "(max_frame_mb); closing the connection")
                await ws.close(code=1009)
                return
            try:
                observation = decode_request(data, info["image_keys"], o.state_key, o.prompt_key,
                                             info["proprio_dim"], o.max_image_side, o.max_prompt_bytes)
            except RequestError as e:
                if not await self._error(ws, str(e)):
                    return
                continue
            decode_ms = (time.perf_counter() - received) * 1e3
            sent = time.perf_counter()
            try:
                result = await self._infer(observation)
            except Exception as e:  # noqa: BLE001 - every failure is this request's error frame
                if not await self._error(ws, str(e) if str(e).startswith("policy: ") else f"policy: {e}"):
                    return
                continue
            if "error" in result:
                if not await self._error(ws, result["error"]):
                    return
                continue
            round_trip_ms = (time.perf_counter() - sent) * 1e3
            timing = dict(result["timing"])
            timing["queue_ms"] = max(0.0, round_trip_ms - timing["infer_ms"])  # routing, transport, batch wait
            timing["decode_ms"] = decode_ms
            if prev_total_ms is not None:
                timing["prev_total_ms"] = prev_total_ms
            order = ["infer_ms", "queue_ms", "decode_ms", "batch_size", "preprocess_ms", "vision_ms", "projector_ms",
                     "llm_ms", "head_ms", "prev_total_ms"]
            timing = {k: timing[k] for k in order if k in timing}
            try:
                await ws.send_bytes(encode_reply(result["actions"], timing, result["replica"]))
            except Exception:  # noqa: BLE001 - the client went away
                return
            prev_total_ms = (time.perf_counter() - received) * 1e3
            self.stats.reply(prev_total_ms)

    async def _error(self, ws: WebSocket, message: str) -> bool:
        """The error as a text frame (openpi's client raises it); False when the client is gone."""
        self.stats.add("errors")
        return await _send_quietly(ws, text=message)


# ------------------------------------------------------------------------------------------------
# The application


def build_app(args: Dict[str, Any]):
    """The Serve application (import path `focusvla.ray_serve:build_app`; `args`: PolicyOptions'
    fields). Replicas, autoscaling and resources: the config file's `deployments` section, by
    deployment name (FocusVLAPolicy, FocusVLAIngress); without one, a policy replica reserves one GPU
    when `device` is cuda (or auto on a cluster with GPUs), one CPU otherwise."""
    options = PolicyOptions(**dict(args or {}))
    o = options.as_dict()
    actor = {"num_gpus": 1, "num_cpus": 1} if options.wants_gpu() else {"num_cpus": 1}
    policy = FocusVLAPolicy.options(ray_actor_options=actor,
                                    max_ongoing_requests=max(32, 4 * options.max_batch)).bind(o)
    return FocusVLAIngress.bind(policy, o)


def app_args(config: Dict[str, Any]) -> List[Tuple[str, Dict[str, Any]]]:
    """(application name, args) of each focusvla application in a Serve config dict."""
    out = []
    for app in config.get("applications") or []:
        if str(app.get("import_path", "")).startswith("focusvla.ray_serve:"):
            out.append((app.get("name", "default"), dict(app.get("args") or {})))
    return out


# ------------------------------------------------------------------------------------------------
# focusvla-ray serve CONFIG


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="focusvla-ray",
        description="focusvla's openpi websocket policy server on a Ray Serve cluster (see README, "
                    "'Fleet scale: Ray Serve').")
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser(
        "serve", help="deploy a Serve config file (as `serve run CONFIG`) and serve until SIGINT / SIGTERM",
        description="Starts a local Ray instance (or attaches to --address / $RAY_ADDRESS), deploys the "
                    "applications of CONFIG (Ray Serve's config schema: http_options, applications with "
                    "import_path focusvla.ray_serve:build_app, args, deployments), waits until they run, prints "
                    "'focusvla-ray: serving ...' with the websocket address, and serves until SIGINT / SIGTERM "
                    "(then shuts the applications down).")
    s.add_argument("config", help="a Ray Serve config YAML (examples/ray/serve_config.yaml)")
    s.add_argument("--address", default=None,
                   help="an existing Ray cluster (ray://head:10001, head:6379 or auto); default $RAY_ADDRESS, "
                        "else a new local Ray instance")
    s.add_argument("--num-cpus", type=float, default=None, help="CPUs of a new local Ray instance (default: all)")
    s.add_argument("--num-gpus", type=int, default=None, help="GPUs of a new local Ray instance (default: all)")
    s.add_argument("--object-store-mb", type=int, default=None,
                   help="object store of a new local Ray instance, MiB (default: Ray's, 30%% of memory)")
    s.add_argument("--dashboard", action=argparse.BooleanOptionalAction, default=True,
                   help="start Ray's dashboard with a new local instance (needed by `serve status`, `serve deploy`)")
    s.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override an argument of every focusvla application (YAML value), e.g. --set max_batch=16")
    s.add_argument("--replicas", type=int, default=None,
                   help=f"a fixed number of {POLICY_DEPLOYMENT} replicas (replaces the config's num_replicas / "
                        "autoscaling_config)")
    s.add_argument("--host", default=None, help="override http_options.host")
    s.add_argument("--port", type=int, default=None, help="override http_options.port")
    s.add_argument("--ready-timeout-s", type=float, default=600,
                   help="give up when the applications are not running after this long (default 600)")
    s.add_argument("--detach", action="store_true",
                   help="return once the applications run and leave them on the cluster (with --address)")
    return p


def _log(message: str) -> None:
    print(f"focusvla-ray: {message}", file=sys.stderr, flush=True)


def _load_config(path: str, overrides: Sequence[str] = (), replicas: Optional[int] = None,
                 host: Optional[str] = None, port: Optional[int] = None, local: bool = False):
    """The Serve config of `path` with the command line's overrides, validated (ServeDeploySchema)
    -> (dict, schema). local: relative checkpoint paths are made absolute (from the current
    directory), for the replicas of a local Ray instance."""
    import yaml
    from ray.serve.schema import ServeDeploySchema

    with open(path) as f:
        config = yaml.safe_load(f)
    if not isinstance(config, dict):
        raise ValueError(f"{path}: not a Serve config (a YAML map with 'applications')")
    if host is not None or port is not None:
        http = config.setdefault("http_options", {}) or {}
        config["http_options"] = http
        if host is not None:
            http["host"] = host
        if port is not None:
            http["port"] = port
    sets = {}
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--set {item!r}: expected KEY=VALUE")
        sets[key] = yaml.safe_load(value)
    apps = app_args(config)
    if not apps:
        raise ValueError(f"{path}: no application with import_path focusvla.ray_serve:build_app")
    for app in config["applications"]:
        if str(app.get("import_path", "")).startswith("focusvla.ray_serve:"):
            app["args"] = {**(app.get("args") or {}), **sets}
            PolicyOptions(**app["args"])  # the argument errors now, not in a replica's log
            checkpoint = app["args"]["checkpoint"]
            if local and not os.path.isabs(checkpoint):
                app["args"]["checkpoint"] = os.path.abspath(checkpoint)
            if replicas is not None:
                deployments = app.setdefault("deployments", []) or []
                app["deployments"] = deployments
                entry = next((d for d in deployments if d.get("name") == POLICY_DEPLOYMENT), None)
                if entry is None:
                    entry = {"name": POLICY_DEPLOYMENT}
                    deployments.append(entry)
                entry.pop("autoscaling_config", None)
                entry["num_replicas"] = replicas
    return config, ServeDeploySchema.model_validate(config)


def _serve(args) -> int:
    from ray.serve._private import api as serve_api
    from ray.serve.config import gRPCOptions

    address = args.address or os.environ.get("RAY_ADDRESS")
    if args.detach and not address:
        _log("--detach needs an existing cluster (--address or $RAY_ADDRESS): a local instance ends with this process")
        return 2
    try:
        config_dict, config = _load_config(args.config, args.set, args.replicas, args.host, args.port,
                                           local=not address)
    except Exception as e:  # noqa: BLE001
        _log(f"{args.config}: {e}")
        return 2
    init = dict(namespace="serve", log_to_driver=True)
    if address:
        init["address"] = address
    else:
        init.update(num_cpus=args.num_cpus, num_gpus=args.num_gpus, include_dashboard=args.dashboard)
        if args.object_store_mb:
            init["object_store_memory"] = args.object_store_mb << 20
        for _, app in app_args(config_dict):
            path = app.get("checkpoint")
            if path and not os.path.isdir(path):
                _log(f"checkpoint {path}: not a directory on this machine")
                return 2
    stop = threading.Event()

    def on_signal(signum, _frame):
        if stop.is_set():
            os._exit(128 + signum)  # a second signal forces
        stop.set()

    ray.init(**init)
    signal.signal(signal.SIGINT, on_signal)  # after ray.init, which installs a SIGTERM handler of its own
    signal.signal(signal.SIGTERM, on_signal)
    started_here = not address
    try:
        gcs = ray.get_runtime_context().gcs_address
        _log(f"Ray {ray.__version__} at {gcs} ({'started here' if started_here else 'attached'}; resources "
             f"{ {k: v for k, v in ray.cluster_resources().items() if k in ('CPU', 'GPU', 'memory')} })")
        client = serve_api.serve_start(http_options=config.http_options.model_dump(),
                                       proxy_location=config.proxy_location,
                                       grpc_options=gRPCOptions(**config.grpc_options.model_dump()),
                                       controller_options=getattr(config, "controller_options", None))
        client.deploy_apps(config, _blocking=False)
        names = [app.name for app in config.applications]
        deadline = time.monotonic() + args.ready_timeout_s
        while True:
            if stop.is_set():
                return _shutdown(started_here, 130)
            status = serve.status()
            states = {n: status.applications.get(n) for n in names}
            failed = {n: s for n, s in states.items() if s is not None and str(s.status).endswith("DEPLOY_FAILED")}
            if failed:
                for n, s in failed.items():
                    _log(f"application {n} failed to deploy: {s.message}")
                    for d, ds in s.deployments.items():
                        if ds.message:
                            _log(f"  {d}: {ds.message}")
                return _shutdown(started_here, 1)
            if all(s is not None and str(s.status).endswith("RUNNING") for s in states.values()):
                break
            if time.monotonic() > deadline:
                _log(f"applications not running after {args.ready_timeout_s:g} s: "
                     f"{ {n: (str(s.status) if s else None) for n, s in states.items()} }")
                return _shutdown(started_here, 1)
            time.sleep(0.5)
        host = config.http_options.host or "127.0.0.1"
        port = config.http_options.port
        for app in config.applications:
            deployments = status.applications[app.name].deployments
            replicas = deployments[POLICY_DEPLOYMENT].replica_states.get("RUNNING", 0) \
                if POLICY_DEPLOYMENT in deployments else "?"
            prefix = app.route_prefix or "/"
            print(f"focusvla-ray: serving {app.name} on ws://{host}:{port}{'' if prefix == '/' else prefix} "
                  f"({replicas} {POLICY_DEPLOYMENT} replicas; Ray at {gcs})", flush=True)
        if args.detach:
            return 0
        while not stop.wait(1.0):
            pass
        _log("stopping: shutting the applications down")
        return _shutdown(started_here, 0)
    finally:
        if ray.is_initialized():
            ray.shutdown()


def _shutdown(started_here: bool, code: int) -> int:
    try:
        serve.shutdown()
    except Exception as e:  # noqa: BLE001
        _log(f"serve.shutdown: {e}")
    return code


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "serve":
        return _serve(args)
    return 2  # pragma: no cover


if __name__ == "__main__":
    sys.exit(main())
