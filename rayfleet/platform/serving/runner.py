"""One loaded version in a process: its batcher, its counters, its spans.

A replica of its own (:class:`rayfleet.deployments.replica.ModelReplica`) holds
one :class:`VersionRunner` for its whole life; a pool replica
(:class:`rayfleet.deployments.pool.PoolReplica`) holds one per version it has
loaded, and closes it when the version is unloaded; a router holds one per
version placed in it (:mod:`rayfleet.platform.serving.inprocess`). In each, a
request takes the same path: counted, queued in the version's own batcher (so a
batch never mixes versions), run off the event loop unless the model has proved
fast (:mod:`.inline`), and traced when tracing is on.
"""

from __future__ import annotations

import asyncio
import logging
import time

import numpy as np

from rayfleet.platform.config.signature import Signature
from rayfleet.platform.config.spec import BatchingSpec
from rayfleet.platform.constants import UNBATCHED_CONCURRENCY
from rayfleet.platform.errors import RayfleetError
from rayfleet.platform.runtimes import Runtime, guarded_predict
from rayfleet.platform.runtimes.device import CPU
from rayfleet.platform.serving.batcher import DynamicBatcher
from rayfleet.platform.serving.counters import ReplicaCounters
from rayfleet.platform.serving.inline import InlineRule
from rayfleet.platform.serving.service import ReplicaResult
from rayfleet.platform.serving.stacking import BatchRunner, Inputs
from rayfleet.platform.tracing import Tracing

__all__ = ["VersionRunner"]

logger = logging.getLogger("ray.serve")


class VersionRunner:
    """Runs requests for one loaded version of ``model``.

    Every request waits in the batcher for the model: batched along the first
    dimension when ``batching`` and the signature allow, otherwise a few at a
    time, so a replica holding many requests does not run them all at once.
    ``counters`` count what it serves (new ones unless given). With
    ``tracing``, each request is a ``rayfleet.replica`` span (labelled
    ``placement``) under the router's, and a batch runs under its first
    request's span, whose ``traceparent`` a Triton runtime sends on. An onnx
    model on CPU that has proved fast runs on the event loop (:mod:`.inline`).
    """

    def __init__(
        self,
        model: str,
        version: str,
        runtime: Runtime,
        signature: Signature,
        batching: BatchingSpec,
        *,
        placement: str = "replica",
        tracing: Tracing | None = None,
        counters: ReplicaCounters | None = None,
    ) -> None:
        self.model = model
        self.version = version
        self.runtime = runtime
        self.placement = placement
        self.tracing = tracing
        # A pool passes the counters it keeps across loads of the version, so
        # its totals never go back when the version is unloaded and reloaded.
        self.counters = counters if counters is not None else ReplicaCounters()
        self.batched = batching.max_batch_size > 1 and signature.batchable
        # Only onnxruntime on CPU: its time for a batch size is steady, while a
        # python model's is the user's own and a remote one waits on the network.
        self.inline = InlineRule() if runtime.device.provider == CPU else None
        run = BatchRunner(signature, self._predict, self.counters)
        traced = tracing is not None
        self.batcher: DynamicBatcher[Inputs, ReplicaResult] = (
            DynamicBatcher(
                run,
                batching.max_batch_size,
                batching.batch_wait_timeout_s,
                carry_context=traced,
            )
            if self.batched
            else DynamicBatcher(
                run, 1, 0.0, max_concurrent=UNBATCHED_CONCURRENCY, carry_context=traced
            )
        )

    async def infer(
        self, inputs: Inputs, trace: dict[str, str] | None = None
    ) -> ReplicaResult:
        """Run one request, batched with others of this version when allowed.

        ``trace``: the router's span context (``traceparent``), sent only when
        tracing is on. ``None`` in the router's own process: the run's span is
        then a child of the request's, made only when that request is sampled
        (a child of a request that is not kept would not be kept either).
        """
        if self.tracing is None or (
            trace is None and not self.tracing.request_sampled()
        ):
            return await self._infer(inputs)
        with self.tracing.replica_span(
            self.model, self.version, self.placement, trace
        ) as span:
            started = time.perf_counter()
            result = await self._infer(inputs)
            elapsed_ms = (time.perf_counter() - started) * 1000
            span.record_run(result.model_ms, result.batch_size, elapsed_ms)
            return result

    async def _infer(self, inputs: Inputs) -> ReplicaResult:
        self.counters.served()
        try:
            return await self.batcher.submit(inputs)
        except Exception:
            self.counters.failed()
            raise

    async def _predict(self, inputs: Inputs) -> tuple[Inputs, float]:
        where = f"{self.model}/{self.version}"
        elements = sum(int(np.size(tensor)) for tensor in inputs.values())
        try:
            if self.inline is not None and self.inline.inline_for(elements):
                outputs, model_ms = guarded_predict(self.runtime, inputs, where)
            else:
                # Off the event loop, so requests keep queueing for the next
                # batch while this one runs.
                outputs, model_ms = await asyncio.to_thread(
                    guarded_predict, self.runtime, inputs, where
                )
        except RayfleetError as error:
            logger.warning("%s: %s", where, error.message)
            raise
        if self.inline is not None:
            self.inline.observe(model_ms, elements)
        return outputs, model_ms

    def close(self) -> None:
        """Stop the batcher's workers; called once no request uses the version."""
        self.batcher.close()
