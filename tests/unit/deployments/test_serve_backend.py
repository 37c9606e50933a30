"""ServeBackend's calls to a version's replicas, over stand-in handles: no Ray
started. A replica that dies mid-request is retried once; other failures are not."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from ray.exceptions import ActorDiedError, ActorUnavailableError
from ray.serve.exceptions import BackPressureError

from rayfleet.deployments.health import DeploymentHealth
from rayfleet.deployments.router import ServeBackend
from rayfleet.platform.constants import REPLICA_CALL_ATTEMPTS
from rayfleet.platform.errors import ServiceUnavailable
from rayfleet.platform.serving.inprocess import InProcessBackend

RESULT = {"y": np.array([2.0])}


class FlakyHandle:
    """A deployment handle whose first calls fail with the given errors."""

    def __init__(self, *failures: Exception) -> None:
        self.failures = list(failures)
        self.calls = 0
        self.infer = SimpleNamespace(remote=self._remote)

    async def _remote(self, inputs: dict[str, np.ndarray]) -> Any:
        self.calls += 1
        if self.failures:
            raise self.failures.pop(0)
        return RESULT


def backend(handle: FlakyHandle) -> ServeBackend:
    handles: Any = {"m": {"v2": handle}}
    unused = DeploymentHealth("app", max_age_s=1.0, status=lambda: None)  # type: ignore[arg-type,return-value]
    return ServeBackend(handles, InProcessBackend({}), unused)


def infer(handle: FlakyHandle) -> Any:
    return asyncio.run(backend(handle).infer("m", "v2", {"x": np.array([1.0])}))


@pytest.mark.parametrize(
    "died", [ActorDiedError(), ActorUnavailableError("gone", None)]
)
def test_a_replica_that_dies_mid_request_is_retried_once(died: Exception) -> None:
    handle = FlakyHandle(died)
    assert infer(handle) is RESULT
    assert handle.calls == 2


def test_a_second_death_answers_503_not_a_third_call() -> None:
    handle = FlakyHandle(*(ActorDiedError() for _ in range(REPLICA_CALL_ATTEMPTS)))
    with pytest.raises(ServiceUnavailable, match="m/v2 cannot take the request now"):
        infer(handle)
    assert handle.calls == REPLICA_CALL_ATTEMPTS


def test_back_pressure_is_not_retried() -> None:
    handle = FlakyHandle(
        BackPressureError(num_queued_requests=4, max_queued_requests=4)
    )
    with pytest.raises(ServiceUnavailable, match="BackPressureError"):
        infer(handle)
    assert handle.calls == 1
