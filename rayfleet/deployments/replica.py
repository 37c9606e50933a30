"""ModelReplica: one version of one model, loaded and warm before it is healthy."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

import ray
from ray import serve
from ray.serve.handle import DeploymentHandle

from rayfleet.autoscaling.serve_policy import DIRECT_ONGOING_METRIC
from rayfleet.deployments.health import deployment_name
from rayfleet.deployments.reporting import report_forever
from rayfleet.deployments.serve_logs import send_to_serve
from rayfleet.platform.background import BackgroundTasks
from rayfleet.platform.config.spec import TracingSpec, VersionSpec
from rayfleet.platform.config.store import Manifest, ModelStore
from rayfleet.platform.serving.channel import ChannelServer
from rayfleet.platform.serving.loading import load_version
from rayfleet.platform.serving.runner import VersionRunner
from rayfleet.platform.serving.service import ReplicaResult
from rayfleet.platform.serving.stacking import Inputs
from rayfleet.platform.tracing import tracing_for

__all__ = ["DirectModelReplica", "ModelReplica"]

logger = logging.getLogger("ray.serve")


class _ModelReplica:
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
        drain_timeout_s: float | None = None,
    ) -> None:
        send_to_serve()
        self.model = model
        # How long a stopping replica waits for its direct calls: the router's
        # request timeout, past which the router has cancelled them anyway.
        self.drain_timeout_s = drain_timeout_s
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
        self.channel: ChannelServer | None = None
        self._channel_started = asyncio.Lock()
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

    async def channel_address(self) -> dict[str, Any] | None:
        """Where a router connects for ``transport: direct`` (host, port, token,
        and this replica's id); ``None`` for a version on the handle.

        Routers ask every replica through Serve's handle (``broadcast``), so
        only a holder of the handle learns the token. The server starts on the
        first ask, on the node's address, where Ray's own calls reach it.
        """
        if self.spec.transport != "direct":
            return None
        async with self._channel_started:
            if self.channel is None:
                node_ip: str = ray.util.get_node_ip_address()  # type: ignore[no-untyped-call]
                channel = ChannelServer(self.runner.infer, node_ip)
                await channel.start()
                self.channel = channel
                logger.info(
                    "%s/%s: direct channel on %s:%d",
                    self.model,
                    self.spec.name,
                    channel.host,
                    channel.port,
                )
        replica = serve.get_replica_context().replica_id.unique_id
        return {"replica": replica, **self.channel.address()}

    def __del__(self) -> Coroutine[Any, Any, None] | None:
        # Serve calls this on graceful shutdown, once the requests it counts are
        # done, and awaits what it returns; Python calls it again on collection.
        self.background.cancel()
        channel: ChannelServer | None = getattr(self, "channel", None)
        if channel is not None and not channel.stopping:
            # Routers send what arrives from now on to another replica; Serve
            # stopped listing this one to them before it called this.
            channel.stop_accepting()
            if channel.busy and channel.on_its_loop():
                # Serve does not count the calls running on the channel: they
                # would be cut when the process stops, and run again elsewhere.
                # (Called off the channel's loop, by collection at exit, a
                # coroutine would never be awaited.)
                return self._drain(channel)
        self._close_tracing()
        return None

    async def _drain(self, channel: ChannelServer) -> None:
        """Let the calls running on ``channel`` answer, then close it, waiting
        no longer than ``drain_timeout_s``: Serve's own deadline
        (``graceful_shutdown_timeout_s``) is a little longer, so the spans
        still leave before Serve stops the process."""
        logger.info(
            "%s/%s: stopping; %d call(s) on the direct channel to finish first",
            self.model,
            self.spec.name,
            channel.in_flight,
        )
        try:
            await channel.close(timeout_s=self.drain_timeout_s)
        finally:
            self._close_tracing()

    def _close_tracing(self) -> None:
        # The spans still held leave before the process does.
        tracing = getattr(self, "tracing", None)
        if tracing is not None:
            tracing.close()

    def stats(self) -> dict[str, Any]:
        """Counters of this replica: requests (``direct_requests`` of them over
        the direct channel, ``direct_cancelled`` of those cancelled by their
        router or with its connection), errors, batch sizes, warm-up time, and
        the execution provider it runs on."""
        counters = self.runner.counters
        return {
            "requests": counters.requests,
            "direct_requests": self.channel.calls if self.channel else 0,
            "direct_cancelled": self.channel.cancelled if self.channel else 0,
            "errors": counters.errors,
            "batch_sizes": dict(counters.batches),
            "warm_s": self.warm_s,
            "provider": self.runner.runtime.device.provider,
        }


class _DirectModelReplica(_ModelReplica):
    """A version with ``transport: direct``: the same replica, reporting what
    runs on its channel to the autoscaler. Only these replicas have the hook:
    with it, Serve pushes a metrics report from every replica each interval,
    which a replica on the handle has no use for."""

    async def record_autoscaling_stats(self) -> dict[str, float]:
        """Serve's hook for custom autoscaling metrics: the calls running over
        the direct channel, which Serve's own count of ongoing requests misses
        (:class:`~rayfleet.autoscaling.serve_policy.RequestCountAutoscaler` adds
        them)."""
        if self.channel is None:
            return {}
        return {DIRECT_ONGOING_METRIC: float(self.channel.in_flight)}


ModelReplica = serve.deployment(_ModelReplica)
DirectModelReplica = serve.deployment(_DirectModelReplica)
