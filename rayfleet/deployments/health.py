"""Which versions Serve reports healthy, read once for routers and the Validator.

A version placed in a replica is ready when its deployment is ``HEALTHY``, which
Serve marks only once every replica's constructor (load and warm-up) is done; a
version placed in the router is ready whenever the router answers at all, since
the router loaded it before it became healthy itself.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from ray import serve
from ray.serve.schema import ServeStatus

from rayfleet.platform.config.spec import PlatformSpec

__all__ = ["DeploymentHealth", "deployment_name"]


def deployment_name(model: str, version: str) -> str:
    """The Serve deployment name of a version (names never contain ':')."""
    return f"{model}:{version}"


class DeploymentHealth:
    """The healthy deployments of one Serve application, cached ``max_age_s``."""

    def __init__(
        self,
        app_name: str,
        max_age_s: float,
        status: Callable[[], ServeStatus] = serve.status,
    ) -> None:
        self.app_name = app_name
        self.max_age_s = max_age_s
        self._status = status
        self._cache: tuple[float, frozenset[str]] | None = None

    async def healthy(self) -> frozenset[str]:
        """Names of the application's deployments Serve reports ``HEALTHY``."""
        now = time.monotonic()
        if self._cache is not None and now - self._cache[0] < self.max_age_s:
            return self._cache[1]
        # serve.status() is a blocking call to the controller.
        status = await asyncio.to_thread(self._status)
        deployments = status.applications[self.app_name].deployments
        healthy = frozenset(
            name for name, state in deployments.items() if state.status == "HEALTHY"
        )
        self._cache = (now, healthy)
        return healthy

    async def versions_ready(self, spec: PlatformSpec) -> dict[tuple[str, str], bool]:
        """Whether each ``(model, version)`` of ``spec`` can take requests."""
        healthy = await self.healthy()
        return {
            (model.name, version.name): version.placement == "router"
            or deployment_name(model.name, version.name) in healthy
            for model in spec.models
            for version in model.versions
        }
