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
examples/ray/serve_config.yaml documents every argument, docs/SERVING.md "Fleet scale: Ray Serve" the path
from one machine to a cluster.
"""
try:  # the message is the point: the dependencies of every module below
    import fastapi  # noqa: F401
    import ray.serve  # noqa: F401
except ImportError as _e:  # pragma: no cover
    raise ImportError(
        f"focusvla.ray_serve needs Ray Serve ({_e}): pip install 'ray[serve]==2.60.0' "
        "(or pip install 'focusvla[ray]')"
    ) from _e

from .app import app_args, build_app  # noqa: E402
from .cli import main  # noqa: E402
from .codec import (LIBERO_IMAGE_KEYS, RequestError, decode_request, encode_reply, packb,  # noqa: E402
                    resolve_image_keys, unpackb)
from .ingress import FocusVLAIngress  # noqa: E402
from .names import INGRESS_DEPLOYMENT, POLICY_DEPLOYMENT  # noqa: E402
from .options import PolicyOptions  # noqa: E402
from .policy import FocusVLAPolicy  # noqa: E402

__all__ = ["RequestError", "decode_request", "encode_reply", "packb", "unpackb", "PolicyOptions",
           "FocusVLAPolicy", "FocusVLAIngress", "build_app", "app_args", "main", "resolve_image_keys",
           "LIBERO_IMAGE_KEYS", "POLICY_DEPLOYMENT", "INGRESS_DEPLOYMENT"]

if __name__ == "__main__":
    raise SystemExit(main())
