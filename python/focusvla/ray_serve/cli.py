"""`focusvla-ray serve CONFIG`: deploy a Serve config file and serve until SIGINT / SIGTERM."""
import argparse
import os
import signal  # noqa: F401
import sys
import threading
import time  # noqa: F401
from typing import Optional, Sequence

import ray
from ray import serve

from .app import app_args  # noqa: F401
from .names import POLICY_DEPLOYMENT  # noqa: F401
from .options import PolicyOptions  # noqa: F401

# ------------------------------------------------------------------------------------------------
# focusvla-ray serve CONFIG


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="focusvla-ray",
        description="focusvla's openpi websocket policy server on a Ray Serve cluster (see docs/SERVING.md, "
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
