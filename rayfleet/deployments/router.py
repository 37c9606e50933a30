"""Router: the Serve ingress deployment. Owns the HTTP app, calls the replicas.

Everything HTTP lives in :mod:`rayfleet.platform.ingress.http` and everything about
choosing and checking in :mod:`rayfleet.platform.serving.service`; this module
only wires them to Serve deployment handles and turns Ray's failures into typed errors.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any

import numpy as np
import ray
from ray import serve
from ray.exceptions import RayActorError, RayTaskError
from ray.serve.exceptions import BackPressureError, DeploymentUnavailableError
from ray.serve.handle import DeploymentHandle
from starlette.applications import Starlette
from starlette.routing import Route

from rayfleet.deployments.health import (
    DeploymentHealth,
    deployment_name,
    pool_deployment_name,
    pooled_version_id,
)
from rayfleet.deployments.reporting import report_forever
from rayfleet.deployments.serve_logs import send_to_serve
from rayfleet.platform.background import BackgroundTasks
from rayfleet.platform.config.spec import PlatformSpec
from rayfleet.platform.config.store import Manifest, ModelStore
from rayfleet.platform.constants import (
    CHANNEL_DISCOVER_EVERY_S,
    CHANNEL_DISCOVER_TIMEOUT_S,
    DROPS_LOG_EVERY_S,
    FLUSH_CHECK_S,
    REPLICA_CALL_ATTEMPTS,
    ROUTER_READY_CACHE_S,
    SYNC_TIMEOUT_S,
)
from rayfleet.platform.errors import RayfleetError, ServiceUnavailable
from rayfleet.platform.events_log import EventLog
from rayfleet.platform.ingress.admin import forwarding_routes
from rayfleet.platform.ingress.asgi import ForwardedResponse, Headers
from rayfleet.platform.ingress.grpc import GrpcInference
from rayfleet.platform.ingress.http import build_http_app
from rayfleet.platform.requestlog import RequestLog, StoreSink
from rayfleet.platform.serving.aggregate import ObservationAggregator
from rayfleet.platform.serving.buffer import DropReport
from rayfleet.platform.serving.channel import DirectChannel, Endpoint, NoReplica
from rayfleet.platform.serving.inprocess import InProcessBackend, load_runners
from rayfleet.platform.serving.service import InferenceService, ReplicaResult
from rayfleet.platform.serving.traffic import TrafficPlan
from rayfleet.platform.tracing import Tracing, trace_headers, tracing_for

__all__ = ["Router", "ServeBackend", "ValidatorLink"]

logger = logging.getLogger("ray.serve")

# How long a stopping router waits for its request log's last part: one PUT, well
# within the 20 s Serve allows a replica to stop.
REQUEST_LOG_CLOSE_S = 5.0
# A router that cannot list a version's replicas says so at most once a minute.
DISCOVER_WARN_EVERY_S = 60.0

Handles = dict[str, dict[str, DeploymentHandle[Any]]]


class ServeBackend:
    """Runs versions placed in the router in-process, and reaches every other
    version's replicas through its Serve deployment handle.

    ``traced``: each call carries the current span's context (``traceparent``)
    to the replica, whose span of the run becomes its child.

    ``direct``: the channels of versions with ``transport: direct``. Their
    replicas are learnt by asking each through the handle every
    ``CHANNEL_DISCOVER_EVERY_S``, from the first request on; until one is known,
    calls take the handle.
    """

    def __init__(
        self,
        handles: Handles,
        local: InProcessBackend,
        health: DeploymentHealth,
        *,
        traced: bool = False,
        pooled: Mapping[tuple[str, str], str] | None = None,
        direct: Mapping[tuple[str, str], DirectChannel] | None = None,
    ) -> None:
        self.handles = handles
        self.local = local
        self.health = health
        self.traced = traced
        # (model, version) -> its pool's deployment, for versions in a pool.
        self.pooled = dict(pooled or {})
        self.direct = dict(direct or {})
        self.background = BackgroundTasks("router: direct channels")
        self.closed = False

    def _is_local(self, model: str, version: str) -> bool:
        return version in self.local.runners.get(model, {})

    async def infer(
        self, model: str, version: str, inputs: dict[str, np.ndarray]
    ) -> ReplicaResult:
        """One call to a replica of the version; Ray's failures become typed errors."""
        if self._is_local(model, version):
            return await self.local.infer(model, version, inputs)
        # Untraced, the call is the one replicas have always taken.
        trace = trace_headers() if self.traced else None
        channel = self.direct.get((model, version))
        if channel is not None:
            try:
                return await channel.infer(inputs, trace)
            except NoReplica:
                self._discover(model, version, channel)
        call = self.handles[model][version].infer.remote
        attempts_left = REPLICA_CALL_ATTEMPTS
        while True:
            attempts_left -= 1
            try:
                result: ReplicaResult = await (
                    call(inputs) if trace is None else call(inputs, trace)
                )
                return result
            except RayTaskError as error:
                cause = error.cause
                if isinstance(cause, RayfleetError):
                    raise type(cause)(cause.message) from None
                raise
            except RayActorError as error:
                # ActorDiedError and ActorUnavailableError: the replica went away
                # with the request. Another replica may answer it (constants.py).
                if not attempts_left:
                    raise _unavailable(model, version, error) from error
                logger.warning(
                    "%s/%s: a replica died mid-request, sending it again: %s",
                    model,
                    version,
                    type(error).__name__,
                )
            except (BackPressureError, DeploymentUnavailableError) as error:
                raise _unavailable(model, version, error) from error

    def close(self) -> None:
        """Stop learning replicas, drop the direct connections and stop the
        in-router versions' batchers."""
        self.closed = True
        self.background.cancel()
        for channel in self.direct.values():
            channel.close()
        self.local.close()

    def _discover(self, model: str, version: str, channel: DirectChannel) -> None:
        if self.closed:
            return
        handle = self.handles[model][version]
        self.background.start(
            f"{model}/{version}", lambda: _discover_forever(handle, channel)
        )

    async def ready(self, model: str, version: str) -> bool:
        """Whether the version can take requests: loaded here, or its deployment
        (its own or its pool's) reported healthy by Serve."""
        if self._is_local(model, version):
            return True
        serving = self.pooled.get((model, version)) or deployment_name(model, version)
        return serving in await self.health.healthy()


async def _discover_forever(
    handle: DeploymentHandle[Any], channel: DirectChannel
) -> None:
    """Tell ``channel`` the replicas Serve runs, and their addresses, until
    cancelled. A replica whose answer is an error or unreadable is left out
    until it answers; a round that times out as a whole keeps what the last
    one found, and one that finds no replica running forgets them all."""
    warned_at = -DISCOVER_WARN_EVERY_S
    while True:
        try:
            answers = await handle.broadcast("channel_address").results_async(
                timeout_s=CHANNEL_DISCOVER_TIMEOUT_S, return_exceptions=True
            )
        except DeploymentUnavailableError:
            channel.update([])
        except Exception as error:  # a slow replica or a restarting controller
            now = time.monotonic()
            if now - warned_at >= DISCOVER_WARN_EVERY_S:
                warned_at = now
                logger.warning(
                    "%s: no replica list this round, keeping the last one: %s",
                    channel.name,
                    type(error).__name__,
                )
        else:
            channel.update(_endpoints(channel.name, answers))
        await asyncio.sleep(CHANNEL_DISCOVER_EVERY_S)


def _endpoints(version: str, answers: list[Any]) -> list[Endpoint]:
    found = []
    for answer in answers:
        if not isinstance(answer, dict):
            continue  # that replica's call failed: it is asked again next round
        try:
            found.append(Endpoint.from_address(str(answer["replica"]), answer))
        except (KeyError, TypeError, ValueError):
            logger.warning("%s: a replica's channel address is unreadable", version)
    return found


def _unavailable(model: str, version: str, error: Exception) -> ServiceUnavailable:
    return ServiceUnavailable(
        f"{model}/{version} cannot take the request now: {type(error).__name__}"
    )


def _with_pooled_versions(
    spec: PlatformSpec, handles: Handles, pools: Mapping[str, DeploymentHandle[Any]]
) -> tuple[Handles, dict[tuple[str, str], str]]:
    """``handles`` plus one per version placed in a pool, and each of those
    versions' pool deployment.

    A pooled version's handle is its pool's, with the version as Serve's
    multiplexed model id: Serve's request router then prefers a pool replica
    that has the version loaded (or is loading it), and the replica reads the id
    to know which version to run.
    """
    every = {model: dict(versions) for model, versions in handles.items()}
    pooled: dict[tuple[str, str], str] = {}
    for model in spec.models:
        for version in model.versions:
            if version.pool is None:
                continue
            key = pooled_version_id(model.name, version.name)
            every.setdefault(model.name, {})[version.name] = pools[
                version.pool
            ].options(multiplexed_model_id=key)
            pooled[(model.name, version.name)] = pool_deployment_name(version.pool)
    return every, pooled


class ValidatorLink:
    """The router's side of the Validator: observations and the request counters
    of versions placed in the router out, plans in.

    The loop tolerates a Validator that is slow, restarting or gone: a failed
    call counts its observations as dropped and keeps the last plan (fail
    static), and never touches a client's request. The request log's counters
    ride with the observations, and alone when they changed.
    """

    def __init__(
        self,
        service: InferenceService,
        validator: DeploymentHandle[Any],
        observed: ObservationAggregator,
        router_id: str,
        local: InProcessBackend,
        request_log: RequestLog | None = None,
    ) -> None:
        self.service = service
        self.local = local
        self.validator = validator
        self.observed = observed
        self.router_id = router_id
        self.request_log = request_log
        self._log_counts_sent: dict[str, Any] | None = None
        self.observations = service.spec.observations
        self.background = BackgroundTasks(f"router {router_id}")
        self.drops = DropReport(EventLog(logger), router_id, DROPS_LOG_EVERY_S)

    async def sync_loop(self) -> None:
        """Send what was observed and fetch the traffic plans, in one call.

        A call goes every ``flush_every_s`` when there is something to send,
        sooner when ``flush_max`` shadow-pair rows wait, and at least every
        ``plan_poll_s`` for the plans (the first at once: a router that starts
        mid-rollout must not serve the spec's split for long). One call rather
        than a flush and a poll: each is a Serve handle call on the event loop
        that serves the requests. A round that fails in the router (a summary
        that will not fold, a plan that will not parse) is logged and the loop
        goes on: it carries both the observations and the plans.
        """
        last_flush = time.monotonic()
        last_plans = -math.inf
        while True:
            await asyncio.sleep(FLUSH_CHECK_S)
            now = time.monotonic()
            plans_due = now - last_plans >= self.observations.plan_poll_s
            if (
                not plans_due
                and now - last_flush < self.observations.flush_every_s
                and len(self.observed) < self.observations.flush_max
            ):
                continue
            last_flush = now
            try:
                if await self._sync(plans_due):
                    last_plans = now
            except Exception:  # the loop must outlive any one round
                logger.exception("a round of observations and plans failed")
                last_plans = now

    async def _sync(self, plans_due: bool) -> bool:
        """One round: send the summary, apply the plans. Whether a call was made."""
        self.drops.update(self.observed.dropped)
        summary = self.observed.take()
        log_counts = (
            None if self.request_log is None else self.request_log.counts().to_dict()
        )
        if (
            not plans_due
            and not summary.versions
            and log_counts == self._log_counts_sent
        ):
            return False
        try:
            reply = await asyncio.wait_for(
                self.validator.sync.remote(
                    summary, self.router_id, self.observed.dropped, log_counts
                ),
                timeout=SYNC_TIMEOUT_S,
            )
        except Exception as error:  # count the loss, keep the last plan
            self.observed.lose(summary)
            # The loss itself reaches the log as the rate-limited
            # observations_dropped line; one warning per failed call would
            # repeat it every second while the Validator is down.
            logger.debug("observations lost (%d): %r", summary.observations, error)
            return True
        if reply["ingested"]:
            self._log_counts_sent = log_counts
        else:
            self.observed.lose(summary)
        self.service.update_plans(
            {
                model: TrafficPlan(
                    model, plan["weights"], plan["shadow"], plan["shadow_percent"]
                )
                for model, plan in reply["plans"].items()
            }
        )
        return True

    async def _ask_validator(
        self, method: str, path: str, query: bytes, headers: Headers, body: bytes
    ) -> ForwardedResponse:
        reply: ForwardedResponse = await self.validator.http.remote(
            method, path, query, headers, body
        )
        return reply

    def routes(self) -> list[Route]:
        """``/metrics`` and ``/-/...``, answered by the Validator's own app."""
        timeout_s = self.observations.forward_timeout_s
        return forwarding_routes(self._ask_validator, timeout_s)

    @contextlib.asynccontextmanager
    async def running(self, app: Starlette) -> AsyncIterator[None]:
        """The router app's lifespan: the loops run while it serves."""
        self.background.start("observations and plans", self.sync_loop)
        node_id = ray.get_runtime_context().get_node_id()
        self.background.start(
            "replica reports",
            lambda: report_forever(
                self.validator,
                lambda: self.local.reports(self.router_id, node_id),
                self.observations.replica_report_s,
            ),
        )
        try:
            yield
        finally:
            self.background.cancel()


def _direct_channels(spec: PlatformSpec) -> dict[tuple[str, str], DirectChannel]:
    """A channel for each version with ``transport: direct``, its limits the
    version's own."""
    return {
        (model.name, version.name): DirectChannel(
            f"{model.name}/{version.name}",
            version.replica_max_ongoing_requests,
            version.max_queued_requests,
            attempts=REPLICA_CALL_ATTEMPTS,
        )
        for model in spec.models
        for version in model.versions
        if version.transport == "direct"
    }


@serve.deployment
@serve.ingress()
class Router(GrpcInference):
    """The ingress deployment: owns the HTTP routes and the v2 gRPC methods
    (:class:`GrpcInference`), calls the replicas."""

    def __init__(
        self,
        spec: dict[str, Any],
        manifests: dict[str, dict[str, dict[str, Any]]],
        handles: Handles,
        validator: DeploymentHandle[Any] | None = None,
        pools: dict[str, DeploymentHandle[Any]] | None = None,
    ) -> None:
        send_to_serve()
        platform_spec = PlatformSpec.model_validate(spec)
        handles, pooled = _with_pooled_versions(platform_spec, handles, pools or {})
        typed = {
            model: {v: Manifest.model_validate(m) for v, m in versions.items()}
            for model, versions in manifests.items()
        }
        self.tracing: Tracing | None = tracing_for(platform_spec.tracing)
        # Versions placed in the router load and warm up here, so a router
        # replica is healthy only once it can serve them.
        local = InProcessBackend(
            load_runners(platform_spec, typed, tracing=self.tracing)
        )
        self.observed = ObservationAggregator(platform_spec.observations)
        router_id = serve.get_replica_context().replica_id.unique_id
        self.request_log: RequestLog | None = None
        if platform_spec.request_log.enabled:
            self.request_log = RequestLog(
                platform_spec.request_log,
                {
                    (model, version): manifest.signature
                    for model, versions in typed.items()
                    for version, manifest in versions.items()
                },
                StoreSink(ModelStore(platform_spec.store)),
                router_id,
                log=logger,
            )
        self.backend = ServeBackend(
            handles,
            local,
            DeploymentHealth(
                serve.get_replica_context().app_name, ROUTER_READY_CACHE_S
            ),
            traced=self.tracing is not None,
            pooled=pooled,
            direct=_direct_channels(platform_spec),
        )
        self.service = InferenceService(
            platform_spec,
            typed,
            self.backend,
            recorder=self.observed if validator is not None else None,
            request_log=self.request_log,
            tracing=self.tracing,
        )
        self.link: ValidatorLink | None = None
        if validator is not None:
            self.link = ValidatorLink(
                self.service,
                validator,
                self.observed,
                router_id,
                local,
                self.request_log,
            )

    def __del__(self) -> None:
        backend: ServeBackend | None = getattr(self, "backend", None)
        if backend is not None:
            backend.close()
        # Serve calls this on graceful shutdown: the log's last rows reach the
        # store, if it answers. Absent when __init__ failed before making it.
        request_log: RequestLog | None = getattr(self, "request_log", None)
        if request_log is not None:
            request_log.close(REQUEST_LOG_CLOSE_S)
        # And the spans it still holds reach the collector, if it answers.
        tracing: Tracing | None = getattr(self, "tracing", None)
        if tracing is not None:
            tracing.close()

    def __serve_build_asgi_app__(self) -> Starlette:
        # Serve's own middleware answers every request with its x-request-id.
        if self.link is None:
            return build_http_app(self.service, host_echoes_request_id=True)
        return build_http_app(
            self.service,
            extra_routes=self.link.routes(),
            lifespan=self.link.running,
            host_echoes_request_id=True,
        )
