"""The ingress: openpi's websocket protocol (FastAPI) in front of the policy replicas."""
import asyncio  # noqa: F401
import os
import threading
import time
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import ray
from fastapi import FastAPI, WebSocket
from fastapi.responses import JSONResponse, PlainTextResponse
from ray import serve
from ray.serve.handle import DeploymentHandle

from .codec import RequestError, decode_request, encode_reply, packb, resolve_image_keys  # noqa: F401
from .names import INGRESS_DEPLOYMENT, POLICY_DEPLOYMENT  # noqa: F401
from .options import PolicyOptions

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
            # As `focusvla serve` orders server_timing: its own fields, the policy's stages, then
            # the previous reply's total.
            first = ["infer_ms", "queue_ms", "decode_ms", "batch_size"]
            timing = {k: timing[k] for k in first + [k for k in timing if k not in first]}
            if "prev_total_ms" in timing:
                timing["prev_total_ms"] = timing.pop("prev_total_ms")
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
