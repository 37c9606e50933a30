"""ModelReplica: one version of one model, loaded and warm before it is healthy."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import ray
from ray import serve
from ray.serve.handle import DeploymentHandle

from rayfleet.deployments.health import deployment_name
from rayfleet.deployments.reporting import report_forever
from rayfleet.deployments.serve_logs import send_to_serve
from rayfleet.platform.background import BackgroundTasks
from rayfleet.platform.config.spec import TracingSpec, VersionSpec
from rayfleet.platform.config.store import Manifest, ModelStore
from rayfleet.platform.constants import UNBATCHED_CONCURRENCY
from rayfleet.platform.errors import RayfleetError
from rayfleet.platform.runtimes import Runtime, guarded_predict
from rayfleet.platform.serving.batcher import DynamicBatcher
from rayfleet.platform.serving.counters import ReplicaCounters
from rayfleet.platform.serving.loading import load_version
from rayfleet.platform.serving.service import ReplicaResult
from rayfleet.platform.serving.stacking import BatchRunner, Inputs
from rayfleet.platform.tracing import tracing_for

__all__ = ["ModelReplica"]

logger = logging.getLogger("ray.serve")


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
        validator: DeploymentHandle[Any] | None,
        report_every_s: float,
        tracing: dict[str, Any] | None = None,
    ) -> None:
        send_to_serve()
        self.model = model
        self.spec = VersionSpec.model_validate(version)
        self.background = BackgroundTasks(deployment_name(model, self.spec.name))
        # Before the model loads: __del__ closes it even when loading fails.
        self.tracing = tracing_for(TracingSpec.model_validate(tracing or {}))
        self.manifest = Manifest.model_validate(manifest)
        loaded = load_version(ModelStore(store_uri), model, self.spec, self.manifest)
        self.runtime: Runtime = loaded.runtime
        self.warm_s = loaded.warm_s
        batching = self.spec.batching
        batched = batching.max_batch_size > 1 and self.manifest.signature.batchable
        self.counters = ReplicaCounters()
        run = BatchRunner(self.manifest.signature, self._predict, self.counters)
        # Every request waits in this queue for the model: batched along the
        # first dimension when the signature allows, otherwise a few at a time,
        # so a replica holding many requests does not run them all at once. A
        # traced batch runs under its first request's span, whose traceparent a
        # Triton runtime sends on.
        traced = self.tracing is not None
        self.batcher: DynamicBatcher[Inputs, ReplicaResult] = (
            DynamicBatcher(
                run,
                batching.max_batch_size,
                batching.batch_wait_timeout_s,
                carry_context=traced,
            )
            if batched
            else DynamicBatcher(
                run,
                1,
                0.0,
                max_concurrent=UNBATCHED_CONCURRENCY,
                carry_context=traced,
            )
        )
        if validator is not None:
            replica = serve.get_replica_context().replica_id.unique_id
            node_id = ray.get_runtime_context().get_node_id()
            # Serve runs the constructor on the replica's event loop; the task
            # lives as long as the replica and reports even before any traffic,
            # so a replica the load balancer starves shows up with zero.
            self.background.start(
                "replica reports",
                lambda: report_forever(
                    validator,
                    lambda: [
                        self.counters.report(
                            model,
                            self.spec.name,
                            replica,
                            device=self.runtime.device,
                            node_id=node_id,
                        )
                    ],
                    report_every_s,
                ),
            )
        logger.info(
            "%s/%s loaded and warm in %.2f s on %s (batching %s)",
            model,
            self.spec.name,
            self.warm_s,
            self.runtime.device.provider,
            batched,
        )

    async def infer(
        self, inputs: Inputs, trace: dict[str, str] | None = None
    ) -> ReplicaResult:
        """Run one request, batched with others when the signature allows.

        ``trace``: the router's span context (``traceparent``), sent only when
        tracing is on; the run is a ``rayfleet.replica`` span under it.
        """
        if self.tracing is None:
            return await self._infer(inputs)
        with self.tracing.replica_span(
            self.model, self.spec.name, "replica", trace or {}
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
        where = f"{self.model}/{self.spec.name}"
        try:
            # Off the event loop, so requests keep queueing for the next batch
            # while this one runs.
            return await asyncio.to_thread(guarded_predict, self.runtime, inputs, where)
        except RayfleetError as error:
            logger.warning("%s: %s", where, error.message)
            raise

    def __del__(self) -> None:
        # Serve calls this on graceful shutdown (and Python again on collection):
        # the spans still held leave before the process does.
        self.background.cancel()
        tracing = getattr(self, "tracing", None)
        if tracing is not None:
            tracing.close()

    def stats(self) -> dict[str, Any]:
        """Counters of this replica: requests, errors, batch sizes, warm-up time,
        and the execution provider it runs on."""
        return {
            "requests": self.counters.requests,
            "errors": self.counters.errors,
            "batch_sizes": dict(self.counters.batches),
            "warm_s": self.warm_s,
            "provider": self.runtime.device.provider,
        }
