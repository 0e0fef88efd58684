"""focusvla.vla_eval: a focusvla.Policy as a model server of vla-eval (AllenAI's evaluation harness).

vla-eval (`pip install vla-eval`) runs simulation benchmarks (LIBERO, SimplerEnv, CALVIN, ...) as
websocket clients of a model server. `FocusVLAModelServer` is that server for a VLA-Adapter /
FocusVLA checkpoint, on vla-eval's batched `PredictModelServer`:

    observation  {"images": {"agentview": HxWx3 uint8, "wrist": HxWx3 uint8},
                  "states": 8 floats (eef pos 3, axis-angle 3, gripper qpos 2),
                  "task_description": str}                      (vla-eval's LIBERO benchmark)
    -> Policy.act([agentview, wrist], task_description, states)  (8 x 7, the reference's chunk)
    -> the gripper as the reference's LIBERO eval executes it: normalize_gripper_action(binarize=True)
       ([0, 1] -> [-1, +1], then the sign) and invert_gripper_action (RLDS 0 = close / 1 = open ->
       robosuite -1 = open / +1 = close): g -> -sign(2 g - 1)
    -> the chunk executed open loop: one action per observation, the policy queried again after
       `chunk_size` (8, VLA-Adapter's num_open_loop_steps) observations.

Bad input from the simulator side fails that observation only, through vla-eval's error channel
(an ERROR message "observation_failed: <ErrorName>: <what>", or "episode_start_failed: ..."); the
connection and the server stay up, other sessions are not touched:

    MissingCameraError   a camera the checkpoint needs is absent (names the key, lists those sent)
    ImageError           not H x W x 3 uint8, or not image_size x image_size
    StateError           missing, not state_dim numbers, or NaN / Inf
    InstructionError     task_description missing or empty
    EpisodeOrderError    an observation outside an episode (before EPISODE_START, after
                         EPISODE_END), or EPISODE_START inside a running episode (the old episode
                         is dropped and the new one starts; the error reports it)

Every one is an ObservationError (a ValueError). focusvla.Error from the policy itself travels the
same way. With max_batch_size > 1, concurrent sessions (vla-eval shards) are batched into one
Policy.act_batch; one rejected observation fails only its own request.

Run it in one process with the simulator (`eval`), or as a server for `vla-eval run` (`serve`; vla-eval's
`vla-eval serve` launcher runs examples/vla_eval/serve_focusvla.py, a config's `script:`):

    python -m focusvla.vla_eval eval examples/vla_eval/libero_spatial.yaml --checkpoint DIR \
        --unnorm-key libero_spatial_no_noops            # server and simulator in one process
    python -m focusvla.vla_eval serve --config examples/vla_eval/model_server.yaml --port 8000
    vla-eval run -c examples/vla_eval/libero_spatial.yaml   # the benchmark, against that server

docs/SIMULATION.md has the one command per LIBERO suite.
"""

from __future__ import annotations

import logging
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

try:
    from vla_eval.model_servers.base import SessionContext
    from vla_eval.model_servers.predict import PredictModelServer
    from vla_eval.specs import (
        GRIPPER_CLOSE_POS,
        IMAGE_RGB,
        LANGUAGE,
        POSITION_DELTA,
        ROTATION_AA,
        STATE_EEF_POS_AA_GRIP,
        DimSpec,
    )
except ImportError as _e:  # pragma: no cover - the message is the point
    raise ImportError(f"focusvla.vla_eval needs vla-eval ({_e}): pip install vla-eval") from _e

__all__ = [
    "ObservationError", "MissingCameraError", "ImageError", "StateError", "InstructionError",
    "EpisodeOrderError", "FocusVLAModelServer", "libero_gripper", "evaluate", "main",
]

logger = logging.getLogger(__name__)

_ERROR = "_focusvla_error"  # a per-request exception carried through predict_batch's result list


class ObservationError(ValueError):
    """An observation (or episode message) the server cannot use; the name says which part."""


class MissingCameraError(ObservationError):
    pass


class ImageError(ObservationError):
    pass


class StateError(ObservationError):
    pass


class InstructionError(ObservationError):
    pass


class EpisodeOrderError(ObservationError):
    pass


def libero_gripper(actions: np.ndarray) -> np.ndarray:
    """The reference's process_action for LIBERO (model_family "openvla"), on a chunk or one action:
    normalize_gripper_action(binarize=True) then invert_gripper_action. Returns a copy."""
    out = np.array(actions, dtype=np.float64, copy=True)
    out[..., -1] = 2.0 * (out[..., -1] - 0.0) / (1.0 - 0.0) - 1.0
    out[..., -1] = np.sign(out[..., -1])
    out[..., -1] *= -1.0
    return out


class FocusVLAModelServer(PredictModelServer):
    """vla-eval model server for a focusvla.Policy (see the module docstring).

    Args:
        checkpoint: checkpoint directory (VLA-Adapter release layout).
        unnorm_key: dataset statistics, e.g. "libero_spatial_no_noops" ("" : the checkpoint's only one).
        device, dtype, quantize, jpeg_roundtrip, threads: passed to focusvla.Policy.load
            (dtype "" : the checkpoint's where the device computes it natively; quantize "none").
        image_keys: the observation's camera keys in the checkpoint's camera order (vla-eval's
            LIBERO: agentview, wrist); the first num_images of them are used.
        state_key: the proprio key ("states" for LIBERO; "state" is accepted as well).
        image_size: the side every camera must have (256: LIBERO's render, which act resizes as the
            reference does); 0 accepts any size.
        gripper: "libero" (the reference's normalize + invert) or "raw" (the policy's output as is).
        chunk_size: actions executed open loop per query (8, the reference's num_open_loop_steps).
        max_batch_size, max_wait_time: vla-eval's batching of concurrent sessions.
        policy: an already loaded focusvla.Policy (a training loop's, a test's): checkpoint and the
            load options are then not used.
    """

    def __init__(
        self,
        checkpoint: str,
        unnorm_key: str = "",
        device: str = "cpu",
        dtype: str = "",
        quantize: str = "none",
        jpeg_roundtrip: bool = True,
        threads: int = 0,
        image_keys: List[str] = ["agentview", "wrist"],  # noqa: B006 - jsonargparse reads the default
        state_key: str = "states",
        image_size: int = 256,
        gripper: str = "libero",
        *,
        chunk_size: int = 8,
        action_ensemble: str = "newest",
        max_batch_size: int = 1,
        max_wait_time: float = 0.01,
        policy: Any = None,
    ) -> None:
        super().__init__(chunk_size=chunk_size, action_ensemble=action_ensemble,
                         max_batch_size=max_batch_size, max_wait_time=max_wait_time)
        if gripper not in ("libero", "raw"):
            raise ValueError(f"gripper: {gripper!r} is not 'libero' or 'raw'")
        if policy is None:
            import focusvla

            kwargs: Dict[str, Any] = dict(device=device, dtype=dtype or None, unnorm_key=unnorm_key or None,
                                          threads=threads, jpeg_roundtrip=jpeg_roundtrip)
            if quantize != "none":
                kwargs["quantize"] = quantize
            logger.info("loading %s (%s)", checkpoint, kwargs)
            policy = focusvla.Policy.load(checkpoint, **kwargs)
        self.policy = policy
        self.num_images = int(policy.num_images)
        self.state_dim = int(policy.proprio_dim)
        if len(image_keys) < self.num_images:
            raise ValueError(f"image_keys: {list(image_keys)} names {len(image_keys)} cameras, the checkpoint "
                             f"takes {self.num_images}")
        if chunk_size is not None and not 1 <= chunk_size <= int(policy.chunk_size):
            raise ValueError(f"chunk_size: {chunk_size}, the policy's chunk has {int(policy.chunk_size)} actions")
        self.image_keys = list(image_keys)[: self.num_images]
        self.state_key = state_key
        self.image_size = int(image_size)
        self.gripper = gripper
        self._episodes: Dict[str, str] = {}  # session id -> running episode id
        self.counters = {"queries": 0, "observations": 0, "errors": 0}

    # -- what the benchmark is asked to send -------------------------------------------------------

    def get_observation_params(self) -> Dict[str, Any]:
        # The reference's LIBERO eval: env.seed(0), robosuite's quat2axisangle (no antipodal fold).
        params: Dict[str, Any] = {"env_seed": 0, "quat_no_antipodal": True}
        if self.num_images >= 2:
            params["send_wrist_image"] = True
        if self.state_dim > 0:
            params["send_state"] = True
        return params

    def get_action_spec(self) -> Dict[str, DimSpec]:
        return {"position": POSITION_DELTA, "rotation": ROTATION_AA, "gripper": GRIPPER_CLOSE_POS}

    def get_observation_spec(self) -> Dict[str, DimSpec]:
        spec: Dict[str, DimSpec] = {"image": IMAGE_RGB}
        if self.num_images >= 2:
            spec["wrist_image"] = IMAGE_RGB
        if self.state_dim > 0:
            spec["state"] = STATE_EEF_POS_AA_GRIP
        spec["language"] = LANGUAGE
        return spec

    # -- validation ---------------------------------------------------------------------------------

    def parse_observation(self, obs: Any) -> Tuple[List[np.ndarray], str, Optional[np.ndarray]]:
        """vla-eval observation -> (images, instruction, proprio) for Policy.act; ObservationError on
        anything the policy cannot take as the reference would."""
        if not isinstance(obs, dict):
            raise ObservationError(f"observation: a {type(obs).__name__}, expected a map")
        cams = obs.get("images")
        if not isinstance(cams, dict):
            raise MissingCameraError(f"images: {'missing' if cams is None else type(cams).__name__}, expected a map "
                                     f"of camera name -> HxWx3 uint8 with {self.image_keys}")
        images = []
        for key in self.image_keys:
            if key not in cams:
                raise MissingCameraError(f"images: no {key!r} camera (sent: {sorted(cams)}; the checkpoint takes "
                                         f"{self.image_keys})")
            img = cams[key]
            if not isinstance(img, np.ndarray):
                raise ImageError(f"images[{key!r}]: a {type(img).__name__}, expected an HxWx3 uint8 array")
            if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
                raise ImageError(f"images[{key!r}]: shape {tuple(img.shape)} {img.dtype}, expected HxWx3 uint8")
            if self.image_size and img.shape[:2] != (self.image_size, self.image_size):
                raise ImageError(f"images[{key!r}]: {img.shape[0]}x{img.shape[1]}, expected "
                                 f"{self.image_size}x{self.image_size} (image_size)")
            images.append(np.ascontiguousarray(img))
        instruction = obs.get("task_description")
        if not isinstance(instruction, str) or not instruction.strip():
            raise InstructionError(f"task_description: {'missing' if instruction is None else repr(instruction)}, "
                                   "expected the task's instruction")
        proprio = None
        if self.state_dim > 0:
            raw = obs.get(self.state_key, obs.get("state", obs.get("states")))
            if raw is None:
                raise StateError(f"{self.state_key}: missing (the checkpoint takes {self.state_dim} proprio values; "
                                 "the benchmark's send_state)")
            try:
                proprio = np.asarray(raw, dtype=np.float64).reshape(-1)
            except (TypeError, ValueError) as exc:
                raise StateError(f"{self.state_key}: not numbers ({exc})") from None
            if proprio.size != self.state_dim:
                raise StateError(f"{self.state_key}: {proprio.size} values, expected {self.state_dim}")
            bad = np.flatnonzero(~np.isfinite(proprio))
            if bad.size:
                raise StateError(f"{self.state_key}: value {int(bad[0])} is {proprio[bad[0]]} (not finite)")
        return images, instruction, proprio

    def _check_episode(self, ctx: SessionContext) -> None:
        running = self._episodes.get(ctx.session_id)
        if running is None or running != ctx.episode_id:
            raise EpisodeOrderError("observation outside an episode: send EPISODE_START first "
                                    f"(session {ctx.session_id[:8]}, "
                                    f"{'no episode started' if not ctx.episode_id else 'episode ended'})")

    # -- vla-eval callbacks ---------------------------------------------------------------------------

    async def on_episode_start(self, config: Dict[str, Any], ctx: SessionContext) -> None:
        previous = self._episodes.get(ctx.session_id)
        self._episodes[ctx.session_id] = ctx.episode_id
        await super().on_episode_start(config, ctx)  # drops the session's chunk buffer
        if previous is not None:
            self.counters["errors"] += 1
            raise EpisodeOrderError(f"EPISODE_START inside episode {previous[:8]} (no EPISODE_END): it was "
                                    f"dropped, episode {ctx.episode_id[:8]} starts")

    async def on_episode_end(self, result: Dict[str, Any], ctx: SessionContext) -> None:
        running = self._episodes.pop(ctx.session_id, None)
        await super().on_episode_end(result, ctx)
        if running is None:
            self.counters["errors"] += 1
            raise EpisodeOrderError(f"EPISODE_END without a running episode (session {ctx.session_id[:8]})")

    async def on_observation(self, obs: Any, ctx: SessionContext) -> None:
        try:
            self._check_episode(ctx)
            self.parse_observation(obs)  # every step, the open-loop ones too: a broken simulator shows at once
        except ObservationError:
            self.counters["errors"] += 1
            raise
        self.counters["observations"] += 1
        await super().on_observation(obs, ctx)

    async def _dispatch_batched(self, obs: Any, ctx: SessionContext) -> Dict[str, Any]:
        result = await super()._dispatch_batched(obs, ctx)
        err = result.get(_ERROR) if isinstance(result, dict) else None
        if err is not None:
            self.counters["errors"] += 1
            raise err
        return result

    # -- inference ------------------------------------------------------------------------------------

    def _finish(self, actions: np.ndarray) -> Dict[str, Any]:
        actions = np.asarray(actions, dtype=np.float64)
        if self.gripper == "libero":
            actions = libero_gripper(actions)
        return {"actions": actions.astype(np.float32)}

    def predict(self, obs: Any, ctx: SessionContext) -> Dict[str, Any]:
        images, instruction, proprio = self.parse_observation(obs)
        self.counters["queries"] += 1
        return self._finish(self.policy.act(images, instruction, proprio))

    def predict_batch(self, obs_batch: Sequence[Any], ctx_batch: Sequence[SessionContext]) -> List[Dict[str, Any]]:
        results: List[Optional[Dict[str, Any]]] = [None] * len(obs_batch)
        todo = []
        for i, obs in enumerate(obs_batch):
            try:
                todo.append((i, self.parse_observation(obs)))
            except ObservationError as exc:
                results[i] = {_ERROR: exc}
        if todo:
            # One request's problem fails only that request (the library's batch-failure fallback).
            outs = self.policy.act_batch([t for _, t in todo], isolate_errors=True)
            for (i, _), out in zip(todo, outs):
                results[i] = {_ERROR: out} if isinstance(out, Exception) else self._finish(out)
            self.counters["queries"] += len(todo)
        return results  # type: ignore[return-value]


def evaluate(config: Any, checkpoint: str = "", *, unnorm_key: str = "", device: str = "cpu", dtype: str = "",
             quantize: str = "none", max_batch_size: int = 1, output_dir: Optional[str] = None,
             benchmark_overrides: Optional[Dict[str, Any]] = None, no_save: bool = False,
             server: Optional[FocusVLAModelServer] = None) -> List[Dict[str, Any]]:
    """Loads the checkpoint (or takes `server`), serves it in this process
    (vla_eval.api.serve_background) and runs the eval config (a path or a dict) against it in this
    process too (no Docker): the benchmark's simulator must be importable here (.venv-sim,
    scripts/setup_sim). Returns vla-eval's per-benchmark results (also written under output_dir:
    <benchmark>_aggregate.json, episodes/, the SQLite recording)."""
    from vla_eval import api

    if server is None:
        server = FocusVLAModelServer(checkpoint, unnorm_key=unnorm_key, device=device, dtype=dtype,
                                     quantize=quantize, max_batch_size=max_batch_size)
    return api.evaluate(server, config, docker=False, output_dir=output_dir, no_save=no_save,
                        benchmark_overrides=benchmark_overrides or None)


def _eval_main(argv: List[str]) -> int:
    import argparse
    import json

    p = argparse.ArgumentParser(prog="python -m focusvla.vla_eval eval",
                                description="Evaluate a checkpoint on a vla-eval benchmark config (e.g. "
                                            "examples/vla_eval/libero_spatial.yaml), server and simulator in "
                                            "this process.")
    p.add_argument("config", help="vla-eval eval config (YAML)")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--unnorm-key", default="")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="")
    p.add_argument("--quantize", default="none", choices=["none", "int8", "fp8"])
    p.add_argument("--max-batch-size", type=int, default=1)
    p.add_argument("--episodes-per-task", type=int, default=None)
    p.add_argument("--max-tasks", type=int, default=None)
    p.add_argument("--max-steps", type=int, default=None)
    p.add_argument("--output-dir", default=None)
    p.add_argument("--no-save", action="store_true")
    a = p.parse_args(argv)
    overrides = {k: v for k, v in (("episodes_per_task", a.episodes_per_task), ("max_tasks", a.max_tasks),
                                   ("max_steps", a.max_steps)) if v is not None}
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)-8s %(name)s: %(message)s")
    results = evaluate(a.config, a.checkpoint, unnorm_key=a.unnorm_key, device=a.device, dtype=a.dtype,
                       quantize=a.quantize, max_batch_size=a.max_batch_size, output_dir=a.output_dir,
                       benchmark_overrides=overrides, no_save=a.no_save)
    for r in results:
        print(json.dumps({k: r.get(k) for k in ("benchmark", "mean_success", "num_errors") if k in r}))
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    """python -m focusvla.vla_eval serve --config MODEL_SERVER.yaml [--port N]   (vla-eval's run_server)
    python -m focusvla.vla_eval eval EVAL_CONFIG.yaml --checkpoint DIR [...]   (server + benchmark here)"""
    import sys

    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "eval":
        return _eval_main(argv[1:])
    if argv and argv[0] == "serve":
        argv = argv[1:]
    from vla_eval.model_servers.serve import run_server

    sys.argv = [sys.argv[0]] + argv
    run_server(FocusVLAModelServer)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
