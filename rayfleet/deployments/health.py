"""Which versions Serve reports healthy, read once for routers and the Validator.

A version placed in a replica is ready when its deployment is ``HEALTHY``, which
Serve marks only once every replica's constructor (load and warm-up) is done; a
version placed in the router is ready whenever the router answers at all, since
the router loaded it before it became healthy itself; a version placed in a pool
is ready when the pool's deployment is, since any of its replicas loads the
version on its first request.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from ray import serve
from ray.serve.schema import ServeStatus

from rayfleet.platform.config.spec import PlatformSpec

__all__ = [
    "DeploymentHealth",
    "deployment_name",
    "pool_deployment_name",
    "pooled_version_id",
    "serving_deployment",
]


# Deployment states whose running replicas take requests: Serve reports a healthy
# deployment that autoscales as UPSCALING or DOWNSCALING, not HEALTHY.
_SERVING = frozenset({"HEALTHY", "UPSCALING", "DOWNSCALING"})


def deployment_name(model: str, version: str) -> str:
    """The Serve deployment name of a version (names never contain ':')."""
    return f"{model}:{version}"


def pool_deployment_name(pool: str) -> str:
    """The Serve deployment name of a pool: never a version's (no ':'), nor
    the router's or the Validator's."""
    return f"pool-{pool}"


def pooled_version_id(model: str, version: str) -> str:
    """How a pool knows a version: Serve's multiplexed model id on its handle,
    and the key of the pool's cache (names never contain '/')."""
    return f"{model}/{version}"


def serving_deployment(spec: PlatformSpec, model: str, version: str) -> str | None:
    """The deployment whose replicas run ``model``/``version``: its own, its
    pool's, or None for a version placed in the router."""
    placed = spec.model(model).version(version)
    if placed.placement == "router":
        return None
    if placed.pool is not None:
        return pool_deployment_name(placed.pool)
    return deployment_name(model, version)


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
        """Names of the application's deployments Serve reports ``HEALTHY``, or
        scaling up or down from healthy."""
        now = time.monotonic()
        if self._cache is not None and now - self._cache[0] < self.max_age_s:
            return self._cache[1]
        # serve.status() is a blocking call to the controller.
        status = await asyncio.to_thread(self._status)
        deployments = status.applications[self.app_name].deployments
        healthy = frozenset(
            name for name, state in deployments.items() if state.status in _SERVING
        )
        self._cache = (now, healthy)
        return healthy

    async def versions_ready(self, spec: PlatformSpec) -> dict[tuple[str, str], bool]:
        """Whether each ``(model, version)`` of ``spec`` can take requests."""
        healthy = await self.healthy()
        ready = {}
        for model in spec.models:
            for version in model.versions:
                serving = serving_deployment(spec, model.name, version.name)
                ready[(model.name, version.name)] = (
                    serving is None or serving in healthy
                )
        return ready
