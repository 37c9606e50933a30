"""DeploymentHealth over a stand-in for serve.status(): no Ray started."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

from rayfleet.deployments.health import (
    DeploymentHealth,
    deployment_name,
    pool_deployment_name,
    pooled_version_id,
)
from rayfleet.platform.config.spec import parse_spec


class FakeStatus:
    """serve.status() of one application, counting the calls."""

    def __init__(self, states: dict[str, str]) -> None:
        self.states = states
        self.calls = 0

    def __call__(self) -> Any:
        self.calls += 1
        deployments = {
            name: SimpleNamespace(status=state) for name, state in self.states.items()
        }
        return SimpleNamespace(
            applications={"app": SimpleNamespace(deployments=deployments)}
        )


SPEC = parse_spec(
    {
        "store": "memory://unused",
        "models": [
            {
                "name": "digits",
                "versions": [
                    {"name": "v1", "placement": "router"},
                    {"name": "v2", "canary": True, "weight": 0},
                    {"name": "v3", "canary": True, "weight": 0},
                    {
                        "name": "v4",
                        "canary": True,
                        "weight": 0,
                        "placement": "pool",
                        "pool": "small",
                    },
                ],
            }
        ],
        "pools": [{"name": "small"}],
    }
)


def test_versions_ready_by_placement_and_health() -> None:
    status = FakeStatus({"digits:v2": "HEALTHY", "digits:v3": "UPDATING"})
    health = DeploymentHealth("app", 60.0, status)
    ready = asyncio.run(health.versions_ready(SPEC))
    assert ready == {
        ("digits", "v1"): True,
        ("digits", "v2"): True,
        ("digits", "v3"): False,
        ("digits", "v4"): False,
    }
    # A pooled version is ready with its pool, which loads it on demand; a
    # deployment scaling up serves on with the replicas it has.
    status.states["pool-small"] = "UPSCALING"
    ready = asyncio.run(DeploymentHealth("app", 60.0, status).versions_ready(SPEC))
    assert ready[("digits", "v4")] is True


def test_status_is_read_once_per_max_age() -> None:
    status = FakeStatus({"digits:v2": "HEALTHY"})

    async def twice(health: DeploymentHealth) -> frozenset[str]:
        await health.healthy()
        status.states["digits:v3"] = "HEALTHY"
        return await health.healthy()

    assert asyncio.run(twice(DeploymentHealth("app", 60.0, status))) == {"digits:v2"}
    assert status.calls == 1
    fresh = asyncio.run(twice(DeploymentHealth("app", 0.0, status)))
    assert fresh == {"digits:v2", "digits:v3"}
    assert status.calls == 3


def test_deployment_name() -> None:
    assert deployment_name("digits", "v2") == "digits:v2"
    assert pool_deployment_name("small") == "pool-small"
    assert pooled_version_id("digits", "v2") == "digits/v2"
