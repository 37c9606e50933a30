"""Runtimes in the calling process, without Ray.

The router runs versions placed in it (``placement: router``) here, with no Ray
hop; route tests and benchmarks run the whole HTTP app over it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping

import numpy as np

from rayfleet.platform.config.spec import Placement, PlatformSpec
from rayfleet.platform.config.store import Manifest, ModelStore
from rayfleet.platform.errors import RayfleetError
from rayfleet.platform.runtimes.base import Runtime, guarded_predict
from rayfleet.platform.serving.counters import ReplicaCounters, ReplicaReport
from rayfleet.platform.serving.loading import load_version
from rayfleet.platform.serving.service import ReplicaResult
from rayfleet.platform.tracing import Tracing

__all__ = ["InProcessBackend", "load_runtimes"]


class InProcessBackend:
    """Runs each request on a loaded runtime, inline or in a worker thread.

    With ``tracing``, each run of a sampled request is a ``rayfleet.replica``
    span under the request's, as in a model replica, so a trace looks the same
    wherever a version runs.
    """

    def __init__(
        self,
        runtimes: Mapping[str, Mapping[str, Runtime]],
        *,
        threaded: bool = False,
        tracing: Tracing | None = None,
    ) -> None:
        self.runtimes = runtimes
        self.threaded = threaded
        self.tracing = tracing
        self.counters = {
            (model, version): ReplicaCounters()
            for model, versions in runtimes.items()
            for version in versions
        }

    async def infer(
        self, model: str, version: str, inputs: dict[str, np.ndarray]
    ) -> ReplicaResult:
        """Predict on the version's runtime; its own exceptions become ModelError."""
        if self.tracing is None or not self.tracing.request_sampled():
            return await self._run(model, version, inputs)
        with self.tracing.replica_span(model, version, "router") as span:
            started = time.perf_counter()
            result = await self._run(model, version, inputs)
            elapsed_ms = (time.perf_counter() - started) * 1000
            span.record_run(result.model_ms, result.batch_size, elapsed_ms)
            return result

    async def _run(
        self, model: str, version: str, inputs: dict[str, np.ndarray]
    ) -> ReplicaResult:
        runtime, where = self.runtimes[model][version], f"{model}/{version}"
        counters = self.counters[(model, version)]
        counters.served()
        try:
            if self.threaded:
                outputs, model_ms = await asyncio.to_thread(
                    guarded_predict, runtime, inputs, where
                )
            else:
                outputs, model_ms = guarded_predict(runtime, inputs, where)
        except RayfleetError:
            counters.failed()
            raise
        counters.ran_batch(1)
        return ReplicaResult(outputs, model_ms, 1)

    def reports(self, replica: str, node_id: str) -> list[ReplicaReport]:
        """Every loaded version's counters and device, as reports from
        ``replica`` on Ray node ``node_id``."""
        return [
            counters.report(
                model,
                version,
                replica,
                device=self.runtimes[model][version].device,
                node_id=node_id,
            )
            for (model, version), counters in self.counters.items()
        ]

    async def ready(self, model: str, version: str) -> bool:
        """Loaded runtimes are always ready."""
        return version in self.runtimes.get(model, {})


def load_runtimes(
    spec: PlatformSpec,
    manifests: Mapping[str, Mapping[str, Manifest]],
    *,
    placement: Placement | None = "router",
) -> dict[str, dict[str, Runtime]]:
    """Load and warm up every version placed at ``placement`` (``None``: all)."""
    store = ModelStore(spec.store)
    runtimes: dict[str, dict[str, Runtime]] = {}
    for model in spec.models:
        for version in model.versions:
            if placement is not None and version.placement != placement:
                continue
            manifest = manifests[model.name][version.name]
            loaded = load_version(store, model.name, version, manifest)
            runtimes.setdefault(model.name, {})[version.name] = loaded.runtime
    return runtimes
