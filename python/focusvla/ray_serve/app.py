"""The Serve application: the import path of a Serve config file (`focusvla.ray_serve:build_app`)."""
from typing import Any, Dict, List, Tuple

from .ingress import FocusVLAIngress
from .options import PolicyOptions
from .policy import FocusVLAPolicy

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
