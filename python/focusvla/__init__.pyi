"""focusvla: LibTorch inference for FocusVLA / VLA-Adapter robot policies.

    import focusvla
    policy = focusvla.Policy.load("/path/to/checkpoint", unnorm_key="libero_spatial_no_noops")
    actions = policy.act([agentview, wrist], "put the bowl on the plate", proprio)  # (8, 7) float64
    executor = focusvla.ChunkExecutor(policy, mode="async", hz=20)       # a control loop's side
    action = executor.tick([agentview, wrist], "put the bowl on the plate", proprio)  # (7,) now
"""

from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, TypedDict, Union, overload, Literal

import numpy as np
import numpy.typing as npt
import torch

__version__: str

ImageLike = Union[npt.NDArray[np.uint8], torch.Tensor]
"""One camera image: H x W x 3 RGB uint8, a numpy array or a torch tensor (CPU or CUDA). Contiguous
arrays are used in place (zero copy); any other strides are copied to a contiguous array first."""

ProprioLike = Union[Sequence[float], npt.NDArray[Any], torch.Tensor, None]
"""The raw robot state (a 1-D sequence of numbers); None when the checkpoint has no proprio projector."""

class Observation(TypedDict, total=False):
    images: Sequence[ImageLike]
    instruction: str
    proprio: ProprioLike

class Error(RuntimeError):
    """The library's error (focusvla::Error): the message names the thing (a file, a key, an argument)
    and the problem, e.g. "proprio: value 3 is not finite"."""

def _check_torch_version(installed: str, built_against: str) -> None:
    """Raises ImportError naming both versions unless they are equal."""

class Policy:
    """A loaded policy checkpoint (focusvla::Policy). May be shared between threads: calls on one
    Policy run one at a time; separate Policies run in parallel. load, act and act_batch release the
    GIL while they compute."""

    @staticmethod
    def load(
        path: str,
        device: Union[str, torch.device] = "cpu",
        dtype: Union[str, torch.dtype, None] = None,
        unnorm_key: Optional[str] = None,
        prompt_format: Literal["auto", "openvla", "qwen-chat"] = "auto",
        center_crop: bool = True,
        threads: int = 0,
        cuda_graphs: bool = True,
        num_images: int = 0,
        normalization: Literal["bounds_q99", "bounds"] = "bounds_q99",
        diagnostics: bool = False,
        cpu_bf16_matmul: Literal["auto", "native", "float32"] = "auto",
        jpeg_roundtrip: bool = True,
        quantize: Literal["none", "int8", "fp8"] = "none",
        batch_buckets: Optional[List[int]] = None,
        max_cached_shapes: int = 8,
    ) -> "Policy":
        """Loads a checkpoint directory in the VLA-Adapter release layout.

        The defaults reproduce the reference's LIBERO evaluation of the checkpoint: its prompt format
        ("auto"), the 0.9 center crop, and (dtype None) the checkpoint's dtype where the device computes
        it natively, float32 elsewhere. unnorm_key picks the dataset statistics (required when the
        checkpoint holds several). threads: CPU intra-op threads (0: LibTorch's setting). num_images:
        cameras per observation (0: config.json's; where it has none, as in the released VLA-Adapter
        checkpoints, each call's image count). diagnostics: return_info also gives the kept
        indices and gates of each FocusVLA block. cpu_bf16_matmul: how bf16 linear layers run on a CPU
        without native bf16 ("auto": as fp32 copies there). jpeg_roundtrip: with the center crop,
        cameras that are not the model's size (LIBERO's 256x256) are JPEG encoded and decoded as
        TensorFlow does before the Lanczos-3 resize, as the reference; False for policies whose
        training frames were never JPEG-compressed. quantize: "int8" (CPU: W8A8 int8 linear layers in
        the vision encoders and the decoder, made at load; CUDA: int8 weight-only) or "fp8" (CUDA,
        compute capability 8.9+); see docs/QUANTIZATION.md and settings["quantize_detail"].
        batch_buckets: batch sizes act_batch pads a call up to (None: 1, 2, 4, 8 on CUDA with graphs,
        none on the CPU), so that mixed batch sizes reuse a few CUDA graphs. max_cached_shapes: input
        shapes whose buffers and graphs are kept.

        Raises focusvla.Error naming the file and problem (missing parts, mis-shaped weights, unknown
        unnorm_key with the list of known ones, ...)."""

    @overload
    def act(self, images: Sequence[ImageLike], instruction: str, proprio: ProprioLike = None,
            return_info: Literal[False] = False) -> npt.NDArray[np.float64]: ...
    @overload
    def act(self, images: Sequence[ImageLike], instruction: str, proprio: ProprioLike = None, *,
            return_info: Literal[True]) -> Tuple[npt.NDArray[np.float64], Dict[str, Any]]: ...
    def act(self, images: Sequence[ImageLike], instruction: str, proprio: ProprioLike = None,
            return_info: bool = False) -> Any:
        """One observation -> the un-normalized action chunk, (chunk_size, action_dim) float64.

        images: a list with one H x W x 3 uint8 image per camera, in the checkpoint's camera order.
        With return_info=True, returns (actions, info): info["timing"] (milliseconds per stage:
        preprocess_ms, vision_ms, projector_ms, llm_ms, head_ms, total_ms, device_ms, cuda_graph),
        info["normalized"] (the head's output), info["settings"] (as Policy.settings) and, with
        diagnostics on, info["kept_indices"] and info["gates"] (numpy arrays per FocusVLA block).

        Raises focusvla.Error on a wrong camera count, image dtype or shape, an empty instruction, a
        proprio of the wrong length or with NaN / Inf; TypeError on arguments of the wrong Python type."""

    def act_batch(self, observations: Sequence[Union[Observation, Tuple[Any, ...]]],
                  return_info: bool = False, isolate_errors: bool = False) -> List[Any]:
        """Several observations in one forward: dicts {"images", "instruction", "proprio"} or tuples
        (images, instruction[, proprio]). Returns one action array per observation (each equal to its
        own act within rounding); with return_info, one (actions, info) pair each. One bad observation
        raises for the whole batch, unless isolate_errors: then the others run anyway (each alone,
        after the batch failed) and its entry is the exception, returned not raised (TypeError for an
        item that is not an observation, focusvla.Error for one the policy refused)."""

    def compare_quantize(self, quantized: "Policy", images: Sequence[ImageLike], instruction: str,
                         proprio: ProprioLike = None) -> Dict[str, Any]:
        """The focus audit (`focusvla explain --compare-quantize`): this policy against `quantized`
        (the same checkpoint loaded with quantize=...) on one observation. Keys: "blocks" (per head
        block: kept_jaccard_mean / kept_jaccard_min, the overlap of the kept top-K patch sets;
        gate_mean_abs_change / gate_max_abs_change), "kept_jaccard_mean", "kept_jaccard_min",
        "action_mean_distance" / "action_max_distance" (share of the action range),
        "reference_actions", "quantized_actions"."""

    def explain(self, images: Sequence[ImageLike], instruction: str, proprio: ProprioLike = None, *,
                reliance: bool = True, per_block: bool = False, gray: int = 128) -> Dict[str, Any]:
        """Where the policy looks and whether it uses vision (focusvla::explain; `focusvla explain`
        writes the same dict as explain.json, with the pictures). Keys: "kept" (FocusVLA top-K: per
        head visual position and per camera "grid" [16][16], the share of (block, head, action step)
        rows that kept the patch) and "attention" (the softmax attention mass per patch), each None
        when the head has none; "gates" (per block: kind, mean, below_0_1, above_0_9),
        "scalar_gates" (per block tanh(g)), "source_mass" (per block self / action_queries / proprio
        / visual shares of one softmax over all sources), "ablations" (name, description,
        mean_distance, max_distance as shares of the action range, actions), "verdict" (level:
        "insensitive", "none", "weak", "uses-vision" or "not-run"; line), "actions", "grid",
        ... (include/focusvla/policy/explain.h defines each). reliance=False skips the five extra
        acts of the reliance test; per_block adds "kept_per_block" / "attention_per_block"; gray is
        the gray level of the gray-camera ablation. Runs with the GIL released; the policy's other
        calls are unaffected. Raises focusvla.Error as act does."""

    @property
    def num_images(self) -> int:
        """Cameras per observation; 0: follows each call (any count >= 1, one count per act_batch)."""
    @property
    def chunk_size(self) -> int:
        """Actions per chunk (rows of act's result)."""
    @property
    def action_dim(self) -> int:
        """Values per action (columns of act's result)."""
    @property
    def proprio_dim(self) -> int:
        """Length of the proprio vector; 0 without a proprio projector."""
    @property
    def head_kind(self) -> str:
        """"vla-adapter", "vla-adapter-pro" or "focusvla"."""
    @property
    def unnorm_key(self) -> str:
        """The dataset whose statistics (un)normalize."""
    @property
    def settings(self) -> Dict[str, Any]:
        """What the options resolved to, and why: head, prompt_format, prompt_format_source,
        center_crop, jpeg_roundtrip, dtype, dtype_source, device, matmul, unnorm_key, normalization, cameras,
        proprio_dim, quantize, quantized_layers, quantize_detail, batch_buckets, chunk, action_dim."""
    def warm_up(self, instruction: str, cameras: int = 0) -> float:
        """Runs every batch bucket (batch 1 without buckets) once on blank camera images with this
        instruction (twice on CUDA with graphs, capturing each graph), so that the first real calls
        of those shapes find their buffers and graphs. cameras: 0 for the fixed camera count.
        Returns the milliseconds it took."""
    @property
    def cached_shapes(self) -> int:
        """Input shapes (batch size, cameras, prompt lengths) whose buffers and CUDA graphs are
        cached now (at most max_cached_shapes)."""
    @property
    def last_execution(self) -> str:
        """How the last call ran: "cpu", "cuda-eager" or "cuda-graph"."""

    def prompt(self, instruction: str) -> Tuple[str, List[int]]:
        """The prompt text the instruction becomes and its token ids (no BOS / EOS), exactly as act
        builds them."""

    def set_tap(self, callback: Optional[Callable[[str, npt.NDArray[Any]], None]]) -> None:
        """Calls callback(name, array) with a numpy copy of every named intermediate of later calls
        ("vision.output", "llm.layers.3", "llm.norm", "head.blocks.7", ...) to diff against PyTorch
        forward hooks; while set, calls run eagerly (no CUDA graph replay). None removes it."""

def canonical_option(option: str, text: str, what: str) -> str:
    """The canonical spelling of a policy option's text ("dtype", "bf16" -> "bfloat16"; "quantize",
    "w8a8" -> "int8"), checked for spelling only (no device is looked for); Error naming `what`
    otherwise. Options: device, dtype, prompt_format, quantize, cpu_bf16_matmul, normalization
    (docs/OPTIONS.md: the same spellings in the CLI, the C ABI, Policy.load and the Ray app)."""

class SimulatedClock:
    """Time (seconds) that moves only when told to, for ChunkExecutor(clock=...): deterministic
    tests and simulations. Without one the executor reads a monotonic wall clock."""

    def __init__(self, start: float = 0.0) -> None: ...
    def now(self) -> float: ...
    def set(self, seconds: float) -> None: ...
    def advance(self, seconds: float) -> None: ...

PolicyCallable = Callable[[List[npt.NDArray[Any]], str, Optional[npt.NDArray[np.float64]]], Any]
"""A policy as a function: (images, instruction, proprio or None) -> a (chunk, action_dim) array."""

class ChunkExecutor:
    """The robot side of a chunking policy (focusvla::runtime::ChunkExecutor): at each control tick,
    the action to execute now. The caller's loop keeps the rate and calls tick once per period; a
    chunk's row i, from the observation of tick k, is the action for tick k + i.

    mode:
      "open-loop": execute a chunk's first execute_steps rows (0: all), then infer again (inside the
        tick that needs the chunk).
      "async": infer on a background thread once at most `threshold` planned actions remain (4 of 8:
        LeRobot's chunk_size_threshold 0.5). A chunk from tick k landing at tick L drops its rows for
        ticks k .. L-1 (stale); its rows for ticks still planned are merged by `aggregate`: "replace"
        (the new row) or "average" ((1 - new_weight) * old + new_weight * new; 0.7 is LeRobot's
        weighted_average). When the plan runs out first, the last action is repeated (a deadline miss).
      "ensemble": ACT's temporal ensembling: infer every tick; the action is the average of every
        chunk's prediction for this tick, weighted exp(-ensemble_m * i), i = 0 the oldest (ACT: 0.01; in [-10, 10]).

    The first tick of every mode infers inside the tick (there is nothing to execute before the
    first chunk). A failed background inference is raised, unchanged, by the next tick (which does
    nothing else); ticking again carries on. close() (or leaving a `with` block) waits for an
    inference in flight and discards it; tick after close raises focusvla.Error.

    policy: a focusvla.Policy (its act's un-normalized actions) or a callable (images as numpy
    arrays, instruction, proprio or None) -> (chunk, action_dim) array, called from the ticking
    thread or the worker with the GIL held. tick releases the GIL while it runs. clock: a
    SimulatedClock for deterministic runs (None: a monotonic wall clock); time only feeds the
    metrics and deadline accounting, never the decisions, which count ticks."""

    def __init__(
        self,
        policy: Union[Policy, PolicyCallable],
        mode: Literal["open-loop", "async", "ensemble"] = "async",
        hz: float = 20.0,
        execute_steps: int = 0,
        threshold: int = 4,
        aggregate: Literal["replace", "average"] = "replace",
        new_weight: float = 0.7,
        ensemble_m: float = 0.01,
        clock: Optional[SimulatedClock] = None,
        metrics_window: int = 100000,
    ) -> None:
        """Raises focusvla.Error naming an invalid option (hz <= 0, threshold < 0, an unknown mode, ...)."""

    def tick(self, images: Sequence[ImageLike], instruction: str, proprio: ProprioLike = None) -> npt.NDArray[np.float64]:
        """This tick's observation -> the action to execute now, (action_dim,) float64. The executor
        copies what it hands to the background thread: the caller may reuse its buffers."""

    def wait_for_inference(self, timeout: float) -> bool:
        """Blocks (wall time, GIL released) until no background inference runs or `timeout` seconds
        passed; True when none runs. Its chunk lands at the next tick."""

    @property
    def inference_in_flight(self) -> bool:
        """A background inference is running."""

    def metrics(self) -> Dict[str, Any]:
        """Counts (ticks, inferences, failed_inferences, deadline_misses, held_ticks, dropped_steps,
        merged_steps) and milliseconds: inference_p50_ms / _p99_ms / _max_ms (start to return of an
        inference), jitter_p50_ms / _p99_ms / _max_ms (|tick interval - period|),
        staleness_mean_ms / _max_ms and staleness_mean_ticks / _max_ticks (age of each executed
        action's observation). Percentiles are nearest-rank over the last metrics_window samples;
        NaN before the first."""

    def last_tick(self) -> Dict[str, Any]:
        """What the last tick did: tick, held, inferred_inline, inference_started, chunk_landed,
        landed_from_tick, dropped_steps, merged_steps, predictions, deadline_misses, source_tick,
        staleness_ms."""

    @property
    def options(self) -> Dict[str, Any]:
        """mode, hz, execute_steps, threshold, aggregate, new_weight, ensemble_m, metrics_window."""

    def close(self) -> None:
        """Waits for an inference in flight (GIL released), discards it, stops the worker. Idempotent."""

    def __enter__(self) -> "ChunkExecutor": ...
    def __exit__(self, exc_type: Any, exc_value: Any, traceback: Any) -> None: ...
