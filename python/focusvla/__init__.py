"""focusvla: LibTorch inference for FocusVLA / VLA-Adapter robot policies.

    import focusvla
    policy = focusvla.Policy.load("/path/to/checkpoint", unnorm_key="libero_spatial_no_noops")
    actions = policy.act([agentview, wrist], "put the bowl on the plate", proprio)  # (8, 7) float64
    executor = focusvla.ChunkExecutor(policy, mode="async", hz=20)       # a control loop's side
    action = executor.tick([agentview, wrist], "put the bowl on the plate", proprio)  # (7,) now

The native module links the LibTorch of the torch it was built against; torch is imported first
so that the process holds exactly one LibTorch, and a different torch version is an ImportError.
"""

import torch as _torch  # first: its LibTorch is the one the native module links


def _check_torch_version(installed: str, built_against: str) -> None:
    """Raises ImportError unless the imported torch is the version focusvla was built against."""
    if installed != built_against:
        raise ImportError(
            f"focusvla was built against torch {built_against} but torch {installed} is installed; "
            f"install torch {built_against} or rebuild focusvla (pip install . from the checkout) "
            "in this environment"
        )


from ._build_info import TORCH_VERSION as _BUILT_AGAINST  # noqa: E402

_check_torch_version(_torch.__version__, _BUILT_AGAINST)

from ._core import ChunkExecutor, Error, Policy, SimulatedClock, __version__, canonical_option  # noqa: E402

__all__ = ["ChunkExecutor", "Error", "Policy", "SimulatedClock", "__version__", "canonical_option"]
