"""The servers the benchmarks compare, each started as its own process.

    python -m loadtest.targets KIND --store DIR --port PORT

KIND is one of:

- ``starlette``: rayfleet's HTTP app and codecs on one uvicorn process, running the
  model inline: no Ray at all, the HTTP limit of rayfleet's own stack.
- ``serve-bare``: the same app as the single deployment of a Serve application, model
  inside the ingress replica: what a hand-rolled one-deployment Serve app costs.
- ``rayfleet``: the real thing, router deployment plus one deployment per version.

Serve's environment knobs (``RAY_SERVE_ENABLE_DIRECT_INGRESS`` and friends) come
from this process's environment, which Ray passes on to its workers. Prints
``READY`` once it answers, then serves until killed.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from rayfleet.deployments.http_app import build_http_app
from rayfleet.platform.inprocess import InProcessBackend, load_runtimes
from rayfleet.platform.service import InferenceService
from rayfleet.platform.spec import PlatformSpec, parse_spec
from rayfleet.platform.store import ModelStore

__all__ = ["bench_args", "inprocess_app"]


def bench_args(
    store: str,
    *,
    max_batch_size: int = 16,
    placement: str = "replica",
    validation: bool = True,
) -> dict[str, Any]:
    """One model, one version: the spec every target serves."""
    return {
        "store": store,
        "router": {"num_cpus": 0.5},
        "validation": {"enabled": validation},
        "models": [
            {
                "name": "digits",
                "versions": [
                    {
                        "name": "v1",
                        "placement": placement,
                        "num_cpus": 0.5,
                        "batching": {
                            "max_batch_size": max_batch_size,
                            "batch_wait_timeout_s": 0.001,
                        },
                    }
                ],
            }
        ],
    }


def inprocess_app(spec: PlatformSpec) -> Any:
    """rayfleet's HTTP app over runtimes loaded in this process."""
    store = ModelStore(spec.store)
    manifests = {
        model.name: {v.name: store.manifest(model.name, v.name) for v in model.versions}
        for model in spec.models
    }
    runtimes = load_runtimes(spec, manifests, placement=None)
    return build_http_app(InferenceService(spec, manifests, InProcessBackend(runtimes)))


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
    parser.add_argument("--max-batch-size", type=int, default=16)
    parser.add_argument("--placement", choices=["replica", "router"], default="replica")
    parser.add_argument(
        "--no-validation", action="store_true", help="no Validator, no observations"
    )
    args = parser.parse_args()
    spec_args = bench_args(
        args.store,
        max_batch_size=args.max_batch_size,
        placement=args.placement,
        validation=not args.no_validation,
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

    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False)
    serve.start(http_options={"host": "127.0.0.1", "port": args.port})
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
