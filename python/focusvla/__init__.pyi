"""focusvla: LibTorch inference for FocusVLA / VLA-Adapter robot policies.

    import focusvla
    policy = focusvla.Policy.load("/path/to/checkpoint", unnorm_key="libero_spatial_no_noops")
    actions = policy.act([agentview, wrist], "put the bowl on the plate", proprio)  # (8, 7) float64
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
    ) -> "Policy":
        """Loads a checkpoint directory in the VLA-Adapter release layout.

        The defaults reproduce the reference's LIBERO evaluation of the checkpoint: its prompt format
        ("auto"), the 0.9 center crop, and (dtype None) the checkpoint's dtype where the device computes
        it natively, float32 elsewhere. unnorm_key picks the dataset statistics (required when the
        checkpoint holds several). threads: CPU intra-op threads (0: LibTorch's setting). num_images:
        cameras per observation (0: config.json's). diagnostics: return_info also gives the kept
        indices and gates of each FocusVLA block. cpu_bf16_matmul: how bf16 linear layers run on a CPU
        without native bf16 ("auto": as fp32 copies there).

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
                  return_info: bool = False) -> List[Any]:
        """Several observations in one forward: dicts {"images", "instruction", "proprio"} or tuples
        (images, instruction[, proprio]). Returns one action array per observation (each equal to its
        own act within rounding); with return_info, one (actions, info) pair each."""

    @property
    def num_images(self) -> int:
        """Cameras per observation."""
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
        center_crop, dtype, dtype_source, device, matmul, unnorm_key, normalization, cameras,
        proprio_dim, chunk, action_dim."""
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
