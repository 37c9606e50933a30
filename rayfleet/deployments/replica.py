"""ModelReplica: one version of one model, loaded and warm before it is healthy."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from typing import Any

import numpy as np
from ray import serve

from rayfleet.platform.errors import ModelError, RayfleetError
from rayfleet.platform.runtimes import (
    Runtime,
    guarded_predict,
    load_runtime,
    warm_up,
)
from rayfleet.platform.service import ReplicaResult
from rayfleet.platform.spec import VersionSpec
from rayfleet.platform.store import Manifest, ModelStore

__all__ = ["ModelReplica"]

logger = logging.getLogger("ray.serve")

Inputs = dict[str, np.ndarray]


def _split_rows(outputs: Inputs, sizes: list[int]) -> list[Inputs]:
    edges = np.cumsum(sizes)[:-1]
    per_output = {name: np.split(array, edges) for name, array in outputs.items()}
    return [
        {name: parts[index] for name, parts in per_output.items()}
        for index in range(len(sizes))
    ]


@serve.deployment
class ModelReplica:
    """Serves one version. Serve marks it healthy only once the constructor is
    done, and the constructor loads the model and runs it once per batch size, so
    a new replica never meets its first client cold."""

    def __init__(
        self,
        model: str,
        version: dict[str, Any],
        manifest: dict[str, Any],
        store_uri: str,
    ) -> None:
        self.model = model
        self.spec = VersionSpec.model_validate(version)
        self.manifest = Manifest.model_validate(manifest)
        runtime = self.spec.runtime or self.manifest.runtime
        version_dir = None
        if runtime != "triton":
            store = ModelStore(store_uri)
            version_dir = store.fetch(model, self.spec.name, self.spec.uri)
        started = time.perf_counter()
        self.runtime: Runtime = load_runtime(self.manifest, version_dir, self.spec)
        batching = self.spec.batching
        warm_up(self.runtime, self.manifest.signature, batching.max_batch_size)
        self.warm_s = time.perf_counter() - started
        self.batching = (
            batching.max_batch_size > 1 and self.manifest.signature.batchable
        )
        self._batched.set_max_batch_size(batching.max_batch_size)
        self._batched.set_batch_wait_timeout_s(batching.batch_wait_timeout_s)
        self.requests = 0
        self.errors = 0
        self.batch_sizes: Counter[int] = Counter()
        logger.info(
            "%s/%s loaded and warm in %.2f s (batching %s)",
            model,
            self.spec.name,
            self.warm_s,
            self.batching,
        )

    async def infer(self, inputs: Inputs) -> ReplicaResult:
        """Run one request, batched with others when the signature allows."""
        self.requests += 1
        if self.batching:
            return await self._batched(inputs)
        outputs, model_ms = await self._predict(inputs)
        self.batch_sizes[1] += 1
        return ReplicaResult(outputs, model_ms, 1)

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.002)
    async def _batched(self, requests: list[Inputs]) -> list[ReplicaResult]:
        size = len(requests)
        self.batch_sizes[size] += 1
        if size == 1:
            outputs, model_ms = await self._predict(requests[0])
            return [ReplicaResult(outputs, model_ms, 1)]
        rows = [len(next(iter(r.values()))) for r in requests]
        stacked = {
            name: np.concatenate([r[name] for r in requests]) for name in requests[0]
        }
        try:
            outputs, model_ms = await self._predict(stacked)
        except ModelError:
            # One bad request must not fail the others it was batched with: run
            # each alone, so only the one that raises gets the error.
            return list(
                await asyncio.gather(
                    *(self._alone(r) for r in requests), return_exceptions=True
                )
            )
        return [
            ReplicaResult(part, model_ms, size) for part in _split_rows(outputs, rows)
        ]

    async def _alone(self, inputs: Inputs) -> ReplicaResult:
        outputs, model_ms = await self._predict(inputs)
        return ReplicaResult(outputs, model_ms, 1)

    async def _predict(self, inputs: Inputs) -> tuple[Inputs, float]:
        where = f"{self.model}/{self.spec.name}"
        try:
            # Off the event loop, so requests keep queueing for the next batch
            # while this one runs.
            return await asyncio.to_thread(guarded_predict, self.runtime, inputs, where)
        except RayfleetError as error:
            self.errors += 1
            logger.warning("%s: %s", where, error.message)
            raise

    def stats(self) -> dict[str, Any]:
        """Counters of this replica: requests, errors, batch sizes, warm-up time."""
        return {
            "requests": self.requests,
            "errors": self.errors,
            "batch_sizes": dict(self.batch_sizes),
            "warm_s": self.warm_s,
        }
