"""Router: the Serve ingress deployment. Owns the HTTP app, calls the replicas.

Everything HTTP lives in :mod:`rayfleet.platform.ingress.http` and everything about
choosing and checking in :mod:`rayfleet.platform.serving.service`; this module
only wires them to Serve deployment handles and turns Ray's failures into typed errors.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

import numpy as np
from ray import serve
from ray.exceptions import RayActorError, RayTaskError
from ray.serve.exceptions import BackPressureError, DeploymentUnavailableError
from ray.serve.handle import DeploymentHandle
from starlette.applications import Starlette
from starlette.routing import Route

from rayfleet.deployments.health import DeploymentHealth, deployment_name
from rayfleet.deployments.reporting import report_forever
from rayfleet.platform.background import BackgroundTasks
from rayfleet.platform.config.spec import PlatformSpec
from rayfleet.platform.config.store import Manifest
from rayfleet.platform.constants import (
    FLUSH_CHECK_S,
    INGEST_TIMEOUT_S,
    PLAN_POLL_TIMEOUT_S,
    REPLICA_CALL_ATTEMPTS,
    ROUTER_READY_CACHE_S,
)
from rayfleet.platform.errors import RayfleetError, ServiceUnavailable
from rayfleet.platform.ingress.admin import forwarding_routes
from rayfleet.platform.ingress.asgi import ForwardedResponse, Headers
from rayfleet.platform.ingress.grpc import GrpcInference
from rayfleet.platform.ingress.http import build_http_app
from rayfleet.platform.serving.buffer import ObservationBuffer
from rayfleet.platform.serving.inprocess import InProcessBackend, load_runtimes
from rayfleet.platform.serving.service import InferenceService, ReplicaResult
from rayfleet.platform.serving.traffic import TrafficPlan

__all__ = ["Router", "ServeBackend", "ValidatorLink"]

logger = logging.getLogger("ray.serve")

Handles = dict[str, dict[str, DeploymentHandle[Any]]]


class ServeBackend:
    """Runs versions placed in the router in-process, and reaches every other
    version's replicas through its Serve deployment handle."""

    def __init__(
        self, handles: Handles, local: InProcessBackend, health: DeploymentHealth
    ) -> None:
        self.handles = handles
        self.local = local
        self.health = health

    def _is_local(self, model: str, version: str) -> bool:
        return version in self.local.runtimes.get(model, {})

    async def infer(
        self, model: str, version: str, inputs: dict[str, np.ndarray]
    ) -> ReplicaResult:
        """One call to a replica of the version; Ray's failures become typed errors."""
        if self._is_local(model, version):
            return await self.local.infer(model, version, inputs)
        handle = self.handles[model][version]
        attempts_left = REPLICA_CALL_ATTEMPTS
        while True:
            attempts_left -= 1
            try:
                result: ReplicaResult = await handle.infer.remote(inputs)
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

    async def ready(self, model: str, version: str) -> bool:
        """Whether the version can take requests: loaded here, or its deployment
        reported healthy by Serve."""
        if self._is_local(model, version):
            return True
        return deployment_name(model, version) in await self.health.healthy()


def _unavailable(model: str, version: str, error: Exception) -> ServiceUnavailable:
    return ServiceUnavailable(
        f"{model}/{version} cannot take the request now: {type(error).__name__}"
    )


class ValidatorLink:
    """The router's side of the Validator: observations and the request counters
    of versions placed in the router out, plans in.

    Both loops tolerate a Validator that is slow, restarting or gone: a failed
    flush counts its observations as dropped, a failed poll keeps the last plan
    (fail static), and neither ever touches a client's request.
    """

    def __init__(
        self,
        service: InferenceService,
        validator: DeploymentHandle[Any],
        buffer: ObservationBuffer,
        router_id: str,
        local: InProcessBackend,
    ) -> None:
        self.service = service
        self.local = local
        self.validator = validator
        self.buffer = buffer
        self.router_id = router_id
        self.observations = service.spec.observations
        self.plans_received = 0
        self.background = BackgroundTasks(f"router {router_id}")

    async def flush_loop(self) -> None:
        """Send buffered observations every ``flush_every_s`` or when enough wait."""
        every = self.observations.flush_every_s
        while True:
            waited = 0.0
            while waited < every and len(self.buffer) < self.observations.flush_max:
                await asyncio.sleep(min(FLUSH_CHECK_S, every))
                waited += min(FLUSH_CHECK_S, every)
            rows = self.buffer.drain(self.observations.flush_max)
            if not rows:
                continue
            try:
                await asyncio.wait_for(
                    self.validator.ingest.remote(
                        rows, self.router_id, self.buffer.dropped
                    ),
                    timeout=INGEST_TIMEOUT_S,
                )
            except Exception as error:  # any failure: count the loss, carry on
                self.buffer.lose(len(rows))
                logger.warning("observations lost (%d): %r", len(rows), error)

    async def poll_loop(self) -> None:
        """Fetch the traffic plans every ``plan_poll_s``; keep the last on failure."""
        while True:
            try:
                plans = await asyncio.wait_for(
                    self.validator.plans.remote(), timeout=PLAN_POLL_TIMEOUT_S
                )
            except Exception as error:  # fail static: the last plan stays in force
                logger.debug("plan poll failed: %r", error)
            else:
                self.service.update_plans(
                    {
                        model: TrafficPlan(
                            model,
                            plan["weights"],
                            plan["shadow"],
                            plan["shadow_percent"],
                        )
                        for model, plan in plans.items()
                    }
                )
                self.plans_received += 1
            await asyncio.sleep(self.observations.plan_poll_s)

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
        self.background.start("observation flush", self.flush_loop)
        self.background.start("plan poll", self.poll_loop)
        self.background.start(
            "replica reports",
            lambda: report_forever(
                self.validator,
                lambda: self.local.reports(self.router_id),
                self.observations.replica_report_s,
            ),
        )
        try:
            yield
        finally:
            self.background.cancel()


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
    ) -> None:
        platform_spec = PlatformSpec.model_validate(spec)
        typed = {
            model: {v: Manifest.model_validate(m) for v, m in versions.items()}
            for model, versions in manifests.items()
        }
        # Versions placed in the router load and warm up here, so a router
        # replica is healthy only once it can serve them.
        local = InProcessBackend(load_runtimes(platform_spec, typed))
        self.buffer = ObservationBuffer(platform_spec.observations.buffer_size)
        self.service = InferenceService(
            platform_spec,
            typed,
            ServeBackend(
                handles,
                local,
                DeploymentHealth(
                    serve.get_replica_context().app_name, ROUTER_READY_CACHE_S
                ),
            ),
            recorder=self.buffer if validator is not None else None,
        )
        self.link: ValidatorLink | None = None
        if validator is not None:
            router_id = serve.get_replica_context().replica_id.unique_id
            self.link = ValidatorLink(
                self.service, validator, self.buffer, router_id, local
            )

    def __serve_build_asgi_app__(self) -> Starlette:
        if self.link is None:
            return build_http_app(self.service)
        return build_http_app(
            self.service, extra_routes=self.link.routes(), lifespan=self.link.running
        )
