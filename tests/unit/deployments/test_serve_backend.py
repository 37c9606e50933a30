"""ServeBackend's calls to a version's replicas, over stand-in handles: no Ray
started. Requests go in grouped calls; a replica that dies mid-call gets the whole
group sent again, once; other failures are not retried and reach every member."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from ray.exceptions import ActorDiedError, ActorUnavailableError, RayTaskError
from ray.serve.exceptions import BackPressureError

from rayfleet.deployments.health import DeploymentHealth
from rayfleet.deployments.router import ServeBackend
from rayfleet.platform.constants import REPLICA_CALL_ATTEMPTS
from rayfleet.platform.errors import (
    DeadlineExceeded,
    InvalidInput,
    ModelError,
    ServiceUnavailable,
)
from rayfleet.platform.serving.grouping import Answer, GroupBounds
from rayfleet.platform.serving.inprocess import InProcessBackend
from rayfleet.platform.serving.service import ReplicaResult
from rayfleet.platform.serving.stacking import Inputs


class FlakyHandle:
    """A deployment handle whose first calls (those whose members' ``x`` satisfy
    ``when``) fail with the given errors, and whose replica answers each member
    with twice its ``x``, or an InvalidInput when ``x`` is negative."""

    def __init__(
        self, *failures: Exception, when: Callable[[list[float]], bool] = lambda _: True
    ) -> None:
        self.failures = list(failures)
        self.when = when
        self.groups: list[list[float]] = []
        self.release = asyncio.Event()
        self.release.set()
        self.infer_group = SimpleNamespace(remote=self._remote)

    async def _remote(self, group: list[Inputs]) -> list[Answer]:
        xs = [float(inputs["x"][0]) for inputs in group]
        self.groups.append(xs)
        await self.release.wait()
        if self.failures and self.when(xs):
            raise self.failures.pop(0)
        return [
            InvalidInput("negative x")
            if inputs["x"][0] < 0
            else ReplicaResult({"y": inputs["x"] * 2}, 1.0, len(group))
            for inputs in group
        ]


def backend(
    handle: FlakyHandle, slots: int = 4, timeout_s: float = 5.0
) -> ServeBackend:
    handles: Any = {"m": {"v2": handle}}
    unused = DeploymentHealth("app", max_age_s=1.0, status=lambda: None)  # type: ignore[arg-type,return-value]
    bounds = {"m": {"v2": GroupBounds(slots=slots, max_requests=8)}}
    return ServeBackend(handles, InProcessBackend({}), unused, bounds, timeout_s)


def request(x: float) -> Inputs:
    return {"x": np.array([x])}


def infer(handle: FlakyHandle) -> ReplicaResult:
    return asyncio.run(backend(handle).infer("m", "v2", request(1.0)))


@pytest.mark.parametrize(
    "died", [ActorDiedError(), ActorUnavailableError("gone", None)]
)
def test_a_replica_that_dies_mid_request_is_retried_once(died: Exception) -> None:
    handle = FlakyHandle(died)
    assert infer(handle).outputs["y"].tolist() == [2.0]
    assert handle.groups == [[1.0], [1.0]]


def test_a_second_death_answers_503_not_a_third_call() -> None:
    handle = FlakyHandle(*(ActorDiedError() for _ in range(REPLICA_CALL_ATTEMPTS)))
    with pytest.raises(ServiceUnavailable, match="m/v2 cannot take the request now"):
        infer(handle)
    assert len(handle.groups) == REPLICA_CALL_ATTEMPTS


def test_back_pressure_is_not_retried() -> None:
    handle = FlakyHandle(
        BackPressureError(num_queued_requests=4, max_queued_requests=4)
    )
    with pytest.raises(ServiceUnavailable, match="BackPressureError"):
        infer(handle)
    assert len(handle.groups) == 1


def test_a_typed_error_raised_on_the_replica_comes_back_typed() -> None:
    cause = ModelError("m/v2 failed: boom")
    handle = FlakyHandle(RayTaskError("infer_group", "traceback", cause))  # type: ignore[no-untyped-call]
    with pytest.raises(ModelError, match="m/v2 failed: boom"):
        infer(handle)


async def _queue_behind_a_busy_call(
    handle: FlakyHandle, xs: list[float]
) -> list[ReplicaResult | BaseException]:
    """``xs[0]`` alone in the one call slot, held until the rest have queued;
    then the rest, grouped."""
    serve_backend = backend(handle, slots=1)
    handle.release.clear()
    first = asyncio.create_task(serve_backend.infer("m", "v2", request(xs[0])))
    await asyncio.sleep(0.01)
    rest = [
        asyncio.create_task(serve_backend.infer("m", "v2", request(x))) for x in xs[1:]
    ]
    await asyncio.sleep(0.01)
    handle.release.set()
    return list(await asyncio.gather(first, *rest, return_exceptions=True))


def test_requests_queued_behind_a_busy_call_share_the_next_one() -> None:
    handle = FlakyHandle()
    answers = asyncio.run(_queue_behind_a_busy_call(handle, [0.0, 1.0, -2.0, 3.0]))
    assert handle.groups == [[0.0], [1.0, -2.0, 3.0]]
    good = [a.outputs["y"].tolist() for a in answers if isinstance(a, ReplicaResult)]
    assert good == [[0.0], [2.0], [6.0]]
    # The member the replica refused fails alone, with its own error.
    assert isinstance(answers[2], InvalidInput)


def test_a_death_resends_the_whole_group_and_every_member_gets_its_answer() -> None:
    handle = FlakyHandle(ActorDiedError(), when=lambda xs: len(xs) > 1)
    answers = asyncio.run(_queue_behind_a_busy_call(handle, [0.0, 1.0, 2.0]))
    assert handle.groups == [[0.0], [1.0, 2.0], [1.0, 2.0]]
    assert [a.outputs["y"].tolist() for a in answers] == [[0.0], [2.0], [4.0]]  # type: ignore[union-attr]


def test_back_pressure_on_a_group_answers_503_to_each_of_its_members_only() -> None:
    handle = FlakyHandle(
        BackPressureError(num_queued_requests=1, max_queued_requests=1),
        when=lambda xs: 1.0 in xs,
    )
    answers = asyncio.run(_queue_behind_a_busy_call(handle, [0.0, 1.0, 2.0]))
    assert handle.groups == [[0.0], [1.0, 2.0]]
    assert isinstance(answers[0], ReplicaResult)
    assert all(isinstance(a, ServiceUnavailable) for a in answers[1:])


def test_a_cancelled_caller_leaves_its_group_to_the_others() -> None:
    handle = FlakyHandle()

    async def scenario() -> tuple[ReplicaResult, ReplicaResult, bool]:
        serve_backend = backend(handle, slots=1)
        handle.release.clear()
        gone = asyncio.create_task(serve_backend.infer("m", "v2", request(1.0)))
        kept = asyncio.create_task(serve_backend.infer("m", "v2", request(2.0)))
        await asyncio.sleep(0.01)  # both in the one call, held
        gone.cancel()
        handle.release.set()
        answer = await kept
        with pytest.raises(asyncio.CancelledError):
            await gone
        # The sender goes on serving.
        after = await serve_backend.infer("m", "v2", request(3.0))
        return answer, after, gone.cancelled()

    answer, after, cancelled = asyncio.run(scenario())
    assert cancelled
    assert answer.outputs["y"].tolist() == [4.0]
    assert after.outputs["y"].tolist() == [6.0]
    assert handle.groups == [[1.0, 2.0], [3.0]]


def test_a_call_that_outlives_the_deadline_is_cancelled_and_frees_its_slot() -> None:
    handle = FlakyHandle()

    async def scenario() -> ReplicaResult:
        serve_backend = backend(handle, slots=1, timeout_s=0.05)
        handle.release.clear()  # the replica hangs
        with pytest.raises(DeadlineExceeded, match="m/v2 did not answer within"):
            await serve_backend.infer("m", "v2", request(1.0))
        handle.release.set()
        return await serve_backend.infer("m", "v2", request(2.0))

    assert asyncio.run(scenario()).outputs["y"].tolist() == [4.0]
    assert handle.groups == [[1.0], [2.0]]
