"""A backend that runs the runtimes in the calling process, without Ray.

It serves the router's HTTP app for route tests and benchmarks (the HTTP limit of
rayfleet's own stack, with no Ray hop), and is the reference the Serve backend is
measured against.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping

import numpy as np

from rayfleet.platform.runtimes.base import Runtime, guarded_predict
from rayfleet.platform.service import ReplicaResult

__all__ = ["InProcessBackend"]


class InProcessBackend:
    """Runs each request on a loaded runtime, inline or in a worker thread."""

    def __init__(
        self, runtimes: Mapping[str, Mapping[str, Runtime]], *, threaded: bool = False
    ) -> None:
        self.runtimes = runtimes
        self.threaded = threaded

    async def infer(
        self, model: str, version: str, inputs: dict[str, np.ndarray]
    ) -> ReplicaResult:
        """Predict on the version's runtime; its own exceptions become ModelError."""
        runtime, where = self.runtimes[model][version], f"{model}/{version}"
        started = time.perf_counter()
        if self.threaded:
            outputs = await asyncio.to_thread(guarded_predict, runtime, inputs, where)
        else:
            outputs = guarded_predict(runtime, inputs, where)
        return ReplicaResult(outputs, (time.perf_counter() - started) * 1000, 1)

    async def ready(self, model: str, version: str) -> bool:
        """Loaded runtimes are always ready."""
        return version in self.runtimes.get(model, {})
