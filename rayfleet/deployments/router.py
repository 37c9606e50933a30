"""Router: the Serve ingress deployment. Owns the HTTP app, calls the replicas.

Everything HTTP lives in :mod:`rayfleet.platform.ingress.http` and everything about
choosing and checking in :mod:`rayfleet.platform.serving.service`; this module
only wires them to Serve deployment handles and turns Ray's failures into typed errors.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import numpy as np
from ray import serve
from ray.exceptions import RayActorError, RayTaskError
from ray.serve.exceptions import BackPressureError, DeploymentUnavailableError
from ray.serve.handle import DeploymentHandle
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from rayfleet.deployments.reporting import report_forever
from rayfleet.platform.config.spec import PlatformSpec
from rayfleet.platform.config.store import Manifest
from rayfleet.platform.errors import RayfleetError, ServiceUnavailable
from rayfleet.platform.ingress.grpc import GrpcInference
from rayfleet.platform.ingress.http import build_http_app, error_response, guarded
from rayfleet.platform.serving.buffer import ObservationBuffer
from rayfleet.platform.serving.inprocess import InProcessBackend, load_runtimes
from rayfleet.platform.serving.service import InferenceService, ReplicaResult
from rayfleet.platform.serving.traffic import TrafficPlan

__all__ = ["Router", "ServeBackend", "ValidatorLink", "deployment_name"]

logger = logging.getLogger("ray.serve")


class ServeBackend:
    """Runs versions placed in the router in-process, and reaches every other
    version's replicas through its Serve deployment handle."""

    def __init__(
        self,
        handles: dict[str, dict[str, DeploymentHandle]],
        local: InProcessBackend,
    ) -> None:
        self.handles = handles
        self.local = local
        self._ready: dict[str, tuple[float, bool]] = {}

    def _is_local(self, model: str, version: str) -> bool:
        return version in self.local.runtimes.get(model, {})

    async def infer(
        self, model: str, version: str, inputs: dict[str, np.ndarray]
    ) -> ReplicaResult:
        """One call to a replica of the version; Ray's failures become typed errors."""
        if self._is_local(model, version):
            return await self.local.infer(model, version, inputs)
        handle = self.handles[model][version]
        try:
            result: ReplicaResult = await handle.infer.remote(inputs)
        except RayTaskError as error:
            cause = error.cause
            if isinstance(cause, RayfleetError):
                raise type(cause)(cause.message) from None
            raise
        except (BackPressureError, DeploymentUnavailableError, RayActorError) as error:
            raise ServiceUnavailable(
                f"{model}/{version} cannot take the request now: {type(error).__name__}"
            ) from error
        return result

    async def ready(self, model: str, version: str) -> bool:
        """Whether Serve reports the version's deployment healthy (cached 1 s)."""
        if self._is_local(model, version):
            return True
        name = deployment_name(model, version)
        now = time.monotonic()
        cached = self._ready.get(name)
        if cached is not None and now - cached[0] < 1.0:
            return cached[1]
        app = serve.get_replica_context().app_name
        # serve.status() is a blocking call to the controller.
        status = await asyncio.to_thread(serve.status)
        deployments = status.applications[app].deployments
        healthy = name in deployments and deployments[name].status == "HEALTHY"
        self._ready[name] = (now, healthy)
        return healthy


def deployment_name(model: str, version: str) -> str:
    """The Serve deployment name of a version (names never contain ':')."""
    return f"{model}:{version}"


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
        validator: DeploymentHandle,
        buffer: ObservationBuffer,
        router_id: str,
        local: InProcessBackend,
    ) -> None:
        self.service = service
        self.local = local
        self.validator = validator
        self.buffer = buffer
        self.router_id = router_id
        self.validation = service.spec.validation
        self.plans_received = 0

    async def flush_loop(self) -> None:
        """Send buffered observations every ``flush_every_s`` or when enough wait."""
        every = self.validation.flush_every_s
        while True:
            waited = 0.0
            while waited < every and len(self.buffer) < self.validation.flush_max:
                await asyncio.sleep(min(0.05, every))
                waited += min(0.05, every)
            rows = self.buffer.drain(self.validation.flush_max)
            if not rows:
                continue
            try:
                await asyncio.wait_for(
                    self.validator.ingest.remote(
                        rows, self.router_id, self.buffer.dropped
                    ),
                    timeout=5,
                )
            except Exception as error:  # any failure: count the loss, carry on
                self.buffer.lose(len(rows))
                logger.warning("observations lost (%d): %r", len(rows), error)

    async def poll_loop(self) -> None:
        """Fetch the traffic plans every ``plan_poll_s``; keep the last on failure."""
        while True:
            try:
                plans = await asyncio.wait_for(self.validator.plans.remote(), timeout=2)
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
            await asyncio.sleep(self.validation.plan_poll_s)

    async def forward(self, request: Request) -> Response:
        """Answer ``/metrics`` and ``/-/...`` with the Validator's own app."""
        headers = [
            (key.lower().encode(), value.encode())
            for key, value in request.headers.items()
            if key.lower() in ("authorization", "content-type", "accept")
        ]
        # The app may sit under a route prefix; the Validator's routes do not.
        rest = request.path_params.get("path")
        path = "/metrics" if rest is None else f"/-/{rest}"
        try:
            status, reply_headers, body = await asyncio.wait_for(
                self.validator.http.remote(
                    request.method,
                    path,
                    request.url.query.encode(),
                    headers,
                    await request.body(),
                ),
                timeout=10,
            )
        except Exception as error:
            raise ServiceUnavailable(
                f"the Validator is not answering: {error!r}"
            ) from None
        kept = {
            k.decode(): v.decode()
            for k, v in reply_headers
            if k.lower() in (b"content-type", b"retry-after")
        }
        return Response(body, status_code=status, headers=kept)

    @contextlib.asynccontextmanager
    async def running(self, app: Starlette) -> AsyncIterator[None]:
        """The router app's lifespan: both loops run while it serves."""
        tasks = [
            asyncio.create_task(self.flush_loop()),
            asyncio.create_task(self.poll_loop()),
            asyncio.create_task(
                report_forever(
                    self.validator,
                    lambda: self.local.reports(self.router_id),
                    self.validation.replica_report_s,
                )
            ),
        ]
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()


@serve.deployment
@serve.ingress()
class Router(GrpcInference):
    """The ingress deployment: owns the HTTP routes and the v2 gRPC methods
    (:class:`GrpcInference`), calls the replicas."""

    def __init__(
        self,
        spec: dict[str, Any],
        manifests: dict[str, dict[str, dict[str, Any]]],
        handles: dict[str, dict[str, DeploymentHandle]],
        validator: DeploymentHandle | None = None,
    ) -> None:
        platform_spec = PlatformSpec.model_validate(spec)
        typed = {
            model: {v: Manifest.model_validate(m) for v, m in versions.items()}
            for model, versions in manifests.items()
        }
        # Versions placed in the router load and warm up here, so a router
        # replica is healthy only once it can serve them.
        local = InProcessBackend(load_runtimes(platform_spec, typed))
        self.buffer = ObservationBuffer(platform_spec.validation.buffer_size)
        self.service = InferenceService(
            platform_spec,
            typed,
            ServeBackend(handles, local),
            recorder=self.buffer if validator is not None else None,
        )
        self.link = None
        if validator is not None:
            router_id = serve.get_replica_context().replica_id.unique_id
            self.link = ValidatorLink(
                self.service, validator, self.buffer, router_id, local
            )

    def __serve_build_asgi_app__(self) -> Starlette:
        if self.link is None:
            return build_http_app(self.service)
        link = self.link
        forward = guarded(link.forward, error_response)
        return build_http_app(
            self.service,
            extra_routes=[
                Route("/metrics", forward, methods=["GET"]),
                Route("/-/{path:path}", forward, methods=["GET", "POST"]),
            ],
            lifespan=link.running,
        )
