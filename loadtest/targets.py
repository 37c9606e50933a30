"""The servers the benchmarks compare, each started as its own process.

    python -m loadtest.targets KIND --store DIR --port PORT [--model image]
        [--grpc-port PORT]

KIND is one of:

- ``starlette``: rayfleet's HTTP app and codecs on one uvicorn process, the model
  in the same process as a version placed in the router runs (batched, a slow
  model in a worker thread): no Ray at all, the HTTP limit of rayfleet's own stack.
- ``serve-bare``: the same app as the single deployment of a Serve application, model
  inside the ingress replica: what a hand-rolled one-deployment Serve app costs.
- ``rayfleet``: the real thing, router deployment plus one deployment per version.

``--model`` picks the store's model (``digits``, or the ``image`` CNN); version
``v1`` is served either way. ``--grpc-port`` also serves the v2 gRPC service there
(``rayfleet`` only: the router answers it).

Serve's environment knobs (``RAY_SERVE_ENABLE_DIRECT_INGRESS`` and friends) come
from this process's environment, which Ray passes on to its workers. Prints
``READY`` once it answers, then serves until killed.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from rayfleet.platform.config.spec import PlatformSpec, parse_spec
from rayfleet.platform.config.store import ModelStore
from rayfleet.platform.ingress.http import build_http_app
from rayfleet.platform.serving.inprocess import InProcessBackend, load_runners
from rayfleet.platform.serving.service import InferenceService

__all__ = ["bench_args", "inprocess_app"]


def bench_args(
    store: str,
    *,
    model: str = "digits",
    max_batch_size: int = 16,
    placement: str = "replica",
    transport: str = "handle",
    validation: bool = True,
    num_gpus: float = 0.0,
    replicas: int = 1,
    routers: int = 1,
    max_ongoing_requests: int | None = None,
) -> dict[str, Any]:
    """One model, one version: the spec every target serves.

    ``replicas`` and ``routers`` fix the number of version and router replicas.
    """
    return {
        "store": store,
        "router": {
            "num_cpus": 0.5,
            # Image batches are megabytes: room for 32 of them in one JSON body.
            "max_body_bytes": 1 << 30,
            "autoscaling": {"min_replicas": routers, "max_replicas": routers},
        },
        "observations": {"enabled": validation},
        "models": [
            {
                "name": model,
                "versions": [
                    {
                        "name": "v1",
                        "placement": placement,
                        "transport": transport,
                        "num_cpus": 0.5,
                        "num_gpus": num_gpus,
                        "max_ongoing_requests": max_ongoing_requests,
                        "batching": {
                            "max_batch_size": max_batch_size,
                            "batch_wait_timeout_s": 0.001,
                        },
                        "autoscaling": {
                            "min_replicas": replicas,
                            "max_replicas": replicas,
                        },
                    }
                ],
            }
        ],
    }


def inprocess_app(spec: PlatformSpec) -> Any:
    """rayfleet's HTTP app over versions loaded in this process."""
    store = ModelStore(spec.store)
    manifests = {
        model.name: {v.name: store.manifest(model.name, v.name) for v in model.versions}
        for model in spec.models
    }
    runners = load_runners(spec, manifests, placement=None)
    return build_http_app(InferenceService(spec, manifests, InProcessBackend(runners)))


def _serve_bare(spec_args: dict[str, Any]) -> Any:
    from ray import serve

    @serve.deployment(ray_actor_options={"num_cpus": 0.5}, max_ongoing_requests=256)
    @serve.ingress()
    class BareModel:
        def __init__(self, args: dict[str, Any]) -> None:
            self.http_app = inprocess_app(parse_spec(args))

        def __serve_build_asgi_app__(self) -> Any:
            return self.http_app

    return BareModel.bind(spec_args)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("kind", choices=["starlette", "serve-bare", "rayfleet"])
    parser.add_argument("--store", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--model", choices=["digits", "image"], default="digits")
    parser.add_argument("--grpc-port", type=int, help="also serve v2 gRPC here")
    parser.add_argument("--max-batch-size", type=int, default=16)
    parser.add_argument("--placement", choices=["replica", "router"], default="replica")
    parser.add_argument("--transport", choices=["handle", "direct"], default="handle")
    parser.add_argument(
        "--no-validation", action="store_true", help="no Validator, no observations"
    )
    parser.add_argument("--num-gpus", type=float, default=0.0, help="per replica")
    parser.add_argument("--replicas", type=int, default=1, help="of the version")
    parser.add_argument("--routers", type=int, default=1, help="router replicas")
    parser.add_argument(
        "--max-ongoing-requests", type=int, help="per version replica (spec default)"
    )
    parser.add_argument("--num-cpus", type=int, default=4, help="Ray's CPUs")
    args = parser.parse_args()
    spec_args = bench_args(
        args.store,
        model=args.model,
        max_batch_size=args.max_batch_size,
        placement=args.placement,
        transport=args.transport,
        validation=not args.no_validation,
        num_gpus=args.num_gpus,
        replicas=args.replicas,
        routers=args.routers,
        max_ongoing_requests=args.max_ongoing_requests,
    )
    if args.kind == "starlette":
        import uvicorn

        print("READY", flush=True)
        uvicorn.run(
            inprocess_app(parse_spec(spec_args)),
            host="127.0.0.1",
            port=args.port,
            log_level="warning",
            access_log=False,
        )
        return
    import ray
    from ray import serve

    from rayfleet.deployments.app import build
    from rayfleet.deployments.serve_env import grpc_options

    ray.init(num_cpus=args.num_cpus, include_dashboard=False, log_to_driver=False)
    serve.start(
        http_options={"host": "127.0.0.1", "port": args.port},
        grpc_options=grpc_options(args.grpc_port) if args.grpc_port else None,
    )
    app = _serve_bare(spec_args) if args.kind == "serve-bare" else build(spec_args)
    serve.run(app, name="bench", route_prefix="/")
    print("READY", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        serve.shutdown()
        ray.shutdown()


if __name__ == "__main__":
    main()
