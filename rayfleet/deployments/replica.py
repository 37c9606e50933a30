"""ModelReplica: one version of one model, loaded and warm before it is healthy."""

from __future__ import annotations

import logging
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
from rayfleet.platform.serving.loading import load_version
from rayfleet.platform.serving.runner import VersionRunner
from rayfleet.platform.serving.service import ReplicaResult
from rayfleet.platform.serving.stacking import Inputs
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
        self.warm_s = loaded.warm_s
        self.runner = VersionRunner(
            model,
            self.spec.name,
            loaded.runtime,
            self.manifest.signature,
            self.spec.batching,
            tracing=self.tracing,
        )
        if validator is not None:
            replica = serve.get_replica_context().replica_id.unique_id
            node_id = ray.get_runtime_context().get_node_id()
            counters, device = self.runner.counters, self.runner.runtime.device
            # Serve runs the constructor on the replica's event loop; the task
            # lives as long as the replica and reports even before any traffic,
            # so a replica the load balancer starves shows up with zero.
            self.background.start(
                "replica reports",
                lambda: report_forever(
                    validator,
                    lambda: [
                        counters.report(
                            model,
                            self.spec.name,
                            replica,
                            device=device,
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
            loaded.runtime.device.provider,
            self.runner.batched,
        )

    async def infer(
        self, inputs: Inputs, trace: dict[str, str] | None = None
    ) -> ReplicaResult:
        """Run one request, batched with others when the signature allows.

        ``trace``: the router's span context (``traceparent``), sent only when
        tracing is on; the run is a ``rayfleet.replica`` span under it.
        """
        return await self.runner.infer(inputs, trace)

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
        counters = self.runner.counters
        return {
            "requests": counters.requests,
            "errors": counters.errors,
            "batch_sizes": dict(counters.batches),
            "warm_s": self.warm_s,
            "provider": self.runner.runtime.device.provider,
        }
