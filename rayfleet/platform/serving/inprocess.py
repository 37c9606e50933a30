"""Versions run in the calling process, without Ray.

The router runs versions placed in it (``placement: router``) here, with no Ray
hop; route tests and benchmarks run the whole HTTP app over it. Each version
takes the path a replica's does (:class:`.runner.VersionRunner`): batched as
its ``batching`` says, a slow model off the event loop so the router keeps
reading requests while it runs, a fast one on it.
"""

from __future__ import annotations

from collections.abc import Mapping

from rayfleet.platform.config.spec import Placement, PlatformSpec
from rayfleet.platform.config.store import Manifest, ModelStore
from rayfleet.platform.serving.counters import ReplicaReport
from rayfleet.platform.serving.loading import load_version
from rayfleet.platform.serving.runner import VersionRunner
from rayfleet.platform.serving.service import ReplicaResult
from rayfleet.platform.serving.stacking import Inputs
from rayfleet.platform.tracing import Tracing

__all__ = ["InProcessBackend", "load_runners"]

Runners = Mapping[str, Mapping[str, VersionRunner]]


class InProcessBackend:
    """Runs each request on its version's runner in this process.

    The runners' spans (when they trace) are children of the request's own
    span, made only for a sampled request, so a trace looks the same wherever
    a version runs.
    """

    def __init__(self, runners: Runners) -> None:
        self.runners = runners

    async def infer(self, model: str, version: str, inputs: Inputs) -> ReplicaResult:
        """Run one request on the version's runner; a model's own exceptions
        come back as ModelError."""
        return await self.runners[model][version].infer(inputs)

    def reports(self, replica: str, node_id: str) -> list[ReplicaReport]:
        """Every loaded version's counters and device, as reports from
        ``replica`` on Ray node ``node_id``."""
        return [
            runner.counters.report(
                model, version, replica, device=runner.runtime.device, node_id=node_id
            )
            for model, versions in self.runners.items()
            for version, runner in versions.items()
        ]

    async def ready(self, model: str, version: str) -> bool:
        """Loaded versions are always ready."""
        return version in self.runners.get(model, {})

    def close(self) -> None:
        """Stop every runner's batcher: the router is shutting down."""
        for versions in self.runners.values():
            for runner in versions.values():
                runner.close()


def load_runners(
    spec: PlatformSpec,
    manifests: Mapping[str, Mapping[str, Manifest]],
    *,
    placement: Placement | None = "router",
    tracing: Tracing | None = None,
) -> dict[str, dict[str, VersionRunner]]:
    """Load and warm up every version placed at ``placement`` (``None``: all),
    each behind a runner labelled ``router`` in its spans."""
    store = ModelStore(spec.store)
    runners: dict[str, dict[str, VersionRunner]] = {}
    for model in spec.models:
        for version in model.versions:
            if placement is not None and version.placement != placement:
                continue
            manifest = manifests[model.name][version.name]
            loaded = load_version(store, model.name, version, manifest)
            runners.setdefault(model.name, {})[version.name] = VersionRunner(
                model.name,
                version.name,
                loaded.runtime,
                manifest.signature,
                version.batching,
                placement="router",
                tracing=tracing,
            )
    return runners
