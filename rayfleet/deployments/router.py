"""Router: the Serve ingress deployment. Owns the HTTP app, calls the replicas.

Everything HTTP lives in :mod:`rayfleet.deployments.http_app` and everything about
choosing and checking in :mod:`rayfleet.platform.service`; this module only wires
them to Serve deployment handles and turns Ray's failures into typed errors.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import numpy as np
from ray import serve
from ray.exceptions import RayActorError, RayTaskError
from ray.serve.exceptions import BackPressureError, DeploymentUnavailableError
from ray.serve.handle import DeploymentHandle
from starlette.applications import Starlette

from rayfleet.deployments.http_app import build_http_app
from rayfleet.platform.errors import RayfleetError, ServiceUnavailable
from rayfleet.platform.inprocess import InProcessBackend, load_runtimes
from rayfleet.platform.service import InferenceService, ReplicaResult
from rayfleet.platform.spec import PlatformSpec
from rayfleet.platform.store import Manifest

__all__ = ["Router", "ServeBackend", "deployment_name"]


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


@serve.deployment
@serve.ingress()
class Router:
    """The ingress deployment: owns the HTTP routes, calls the replicas."""

    def __init__(
        self,
        spec: dict[str, Any],
        manifests: dict[str, dict[str, dict[str, Any]]],
        handles: dict[str, dict[str, DeploymentHandle]],
    ) -> None:
        platform_spec = PlatformSpec.model_validate(spec)
        typed = {
            model: {v: Manifest.model_validate(m) for v, m in versions.items()}
            for model, versions in manifests.items()
        }
        # Versions placed in the router load and warm up here, so a router
        # replica is healthy only once it can serve them.
        local = InProcessBackend(load_runtimes(platform_spec, typed))
        self.service = InferenceService(
            platform_spec, typed, ServeBackend(handles, local)
        )

    def __serve_build_asgi_app__(self) -> Starlette:
        return build_http_app(self.service)
