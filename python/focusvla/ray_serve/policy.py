"""The policy replicas: one focusvla.Policy each, concurrent requests batched into one act_batch."""
import asyncio  # noqa: F401
import concurrent.futures  # noqa: F401
import os  # noqa: F401
import time
from typing import Any, Dict, List, Tuple

import ray
from ray import serve

from .codec import resolve_image_keys
from .names import POLICY_DEPLOYMENT
from .options import PolicyOptions

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
                                           threads=o.threads, cuda_graphs=o.cuda_graphs,
                                           batch_buckets=o.batch_buckets)
        cameras = len(resolve_image_keys(self.policy.num_images, o.image_keys))  # the ingress's camera count
        for instruction in o.warmup_instructions or []:
            self.policy.warm_up(instruction, cameras)
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
        # One bad observation fails only its own request (the library's batch-failure fallback).
        results = self.policy.act_batch(observations, return_info=True, isolate_errors=True)
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
            # The policy's stage times as the library names them (timing_fields in policy.h).
            stages = {k: v for k, v in info["timing"].items() if k.endswith("_ms")}
            out.append({"actions": actions, "replica": self.replica,
                        "timing": {"infer_ms": infer_ms, "batch_size": float(len(observations)), **stages}})
        return out
