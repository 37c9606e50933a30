"""Grouped calls from the router to a version's replicas, over stand-in calls: every
caller gets its own answer, a failing member fails alone, groups keep to their
bounds, and load still spreads over replicas."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rayfleet.platform.config.signature import Signature
from rayfleet.platform.config.spec import (
    AutoscalingSpec,
    BatchingSpec,
    VersionSpec,
    parse_spec,
)
from rayfleet.platform.config.store import Manifest
from rayfleet.platform.constants import (
    GROUP_MAX_BYTES,
    GROUP_MIN_SLOTS_PER_REPLICA,
    UNBATCHED_CONCURRENCY,
)
from rayfleet.platform.errors import InvalidInput, ModelError, ServiceUnavailable
from rayfleet.platform.serving.grouping import (
    Answer,
    GroupBounds,
    answer_each,
    group_bounds,
    grouped_sender,
    inputs_nbytes,
)
from rayfleet.platform.serving.service import ReplicaResult
from rayfleet.platform.serving.stacking import Inputs


def _signature(shape: list[int]) -> Signature:
    return Signature.model_validate(
        {
            "inputs": [{"name": "x", "datatype": "FP64", "shape": shape}],
            "outputs": [{"name": "y", "datatype": "FP64", "shape": shape}],
        }
    )


BATCHABLE = _signature([-1])
FIXED = _signature([2])  # no batch dimension: a replica cannot stack it


def request(value: float, rows: int = 1) -> Inputs:
    return {"x": np.full(rows, value)}


def value_of(inputs: Inputs) -> float:
    return float(inputs["x"][0])


class Replicas:
    """A version's replicas behind a stand-in handle call. Each call goes to the
    replica with fewer calls in flight of two drawn at random (Serve's power of
    two choices) and holds it for ``seconds``. A member with a negative ``x`` is
    refused (InvalidInput, returned); a group holding ``fail_value`` fails whole
    (ServiceUnavailable, raised), as a call no replica could take."""

    def __init__(
        self, count: int = 1, seconds: float = 0.0, fail_value: float | None = None
    ) -> None:
        self.seconds = seconds
        self.fail_value = fail_value
        self.ongoing = [0] * count
        self.requests = [0] * count
        self.groups: list[list[float]] = []
        self.bytes: list[int] = []
        self.in_flight = 0
        self.most_in_flight = 0
        self.rand = random.Random(0)

    async def __call__(self, group: list[Inputs]) -> list[Answer]:
        values = [value_of(inputs) for inputs in group]
        self.groups.append(values)
        self.bytes.append(sum(inputs_nbytes(inputs) for inputs in group))
        first = second = 0
        if len(self.ongoing) > 1:
            first, second = self.rand.sample(range(len(self.ongoing)), 2)
        chosen = first if self.ongoing[first] <= self.ongoing[second] else second
        self.ongoing[chosen] += 1
        self.requests[chosen] += len(group)
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            await asyncio.sleep(self.seconds)
        finally:
            self.in_flight -= 1
            self.ongoing[chosen] -= 1
        if self.fail_value is not None and self.fail_value in values:
            raise ServiceUnavailable("no replica can take it")
        return [
            InvalidInput(f"negative {value_of(inputs)}")
            if value_of(inputs) < 0
            else ReplicaResult({"y": inputs["x"] * 2}, 0.0, len(group))
            for inputs in group
        ]


def test_inputs_nbytes_counts_buffers_and_the_bytes_of_object_elements() -> None:
    inputs = {
        "image": np.zeros((2, 3), dtype=np.float32),
        "text": np.array([b"abc", "de"], dtype=object),
    }
    assert inputs_nbytes(inputs) == 24 + inputs["text"].nbytes + 5


def test_a_lone_request_goes_at_once_in_a_call_of_its_own() -> None:
    replicas = Replicas()

    async def scenario() -> float:
        sender = grouped_sender(replicas, GroupBounds(slots=4, max_requests=8))
        loop = asyncio.get_running_loop()
        started = loop.time()
        answer = await sender.submit(request(3.0))
        assert answer.outputs["y"].tolist() == [6.0]
        return loop.time() - started

    assert asyncio.run(scenario()) < 0.1
    assert replicas.groups == [[3.0]]


async def _behind_a_busy_slot(
    replicas: Replicas, sender_bounds: GroupBounds, values: list[float]
) -> list[ReplicaResult | BaseException]:
    """``values[0]`` goes first and holds the one slot (the stand-in's
    ``seconds``) while the rest queue; they go in the calls after it."""
    sender = grouped_sender(replicas, sender_bounds)
    first = asyncio.create_task(sender.submit(request(values[0])))
    await asyncio.sleep(replicas.seconds / 4)
    rest = [asyncio.create_task(sender.submit(request(v))) for v in values[1:]]
    return list(await asyncio.gather(first, *rest, return_exceptions=True))


def test_a_failing_member_fails_alone() -> None:
    replicas = Replicas(seconds=0.02)
    answers = asyncio.run(
        _behind_a_busy_slot(
            replicas, GroupBounds(slots=1, max_requests=8), [1.0, 2.0, -3.0, 4.0]
        )
    )
    assert replicas.groups == [[1.0], [2.0, -3.0, 4.0]]
    assert [
        a.outputs["y"].tolist() for a in answers if isinstance(a, ReplicaResult)
    ] == [
        [2.0],
        [4.0],
        [8.0],
    ]
    assert isinstance(answers[2], InvalidInput)
    assert answers[2].message == "negative -3.0"


def test_a_failed_call_reaches_every_member_of_its_group_and_no_other() -> None:
    replicas = Replicas(seconds=0.02, fail_value=2.0)
    answers = asyncio.run(
        _behind_a_busy_slot(
            replicas, GroupBounds(slots=1, max_requests=2), [1.0, 2.0, 3.0, 4.0, 5.0]
        )
    )
    assert replicas.groups == [[1.0], [2.0, 3.0], [4.0, 5.0]]
    assert [type(a) for a in answers] == [
        ReplicaResult,
        ServiceUnavailable,
        ServiceUnavailable,
        ReplicaResult,
        ReplicaResult,
    ]


def test_groups_keep_to_the_count_bound() -> None:
    replicas = Replicas(seconds=0.02)
    values = [float(v) for v in range(1, 9)]
    answers = asyncio.run(
        _behind_a_busy_slot(replicas, GroupBounds(slots=1, max_requests=3), values)
    )
    assert replicas.groups == [[1.0], [2.0, 3.0, 4.0], [5.0, 6.0, 7.0], [8.0]]
    assert all(isinstance(a, ReplicaResult) for a in answers)


def test_groups_keep_to_the_byte_bound_and_a_larger_request_goes_alone() -> None:
    replicas = Replicas(seconds=0.02)

    async def scenario() -> None:
        bounds = GroupBounds(slots=1, max_requests=8, max_bytes=32)
        sender = grouped_sender(replicas, bounds)
        first = asyncio.create_task(sender.submit(request(1.0)))
        await asyncio.sleep(0.005)
        # 8 bytes a row: 16 + 16 fill a group, the 5-row request is over the
        # bound on its own, and the last two share the next group.
        rows = {2.0: 2, 3.0: 2, 4.0: 1, 5.0: 5, 6.0: 1, 7.0: 3}
        rest = [sender.submit(request(v, n)) for v, n in rows.items()]
        answers = await asyncio.gather(first, *rest)
        for (value, n), answer in zip(rows.items(), answers[1:], strict=True):
            assert answer.outputs["y"].tolist() == [value * 2] * n

    asyncio.run(scenario())
    assert replicas.groups == [[1.0], [2.0, 3.0], [4.0], [5.0], [6.0, 7.0]]
    assert replicas.bytes == [8, 32, 8, 40, 32]


def test_cancelled_callers_are_left_out_or_dropped_and_the_rest_answered() -> None:
    replicas = Replicas(seconds=0.02)

    async def scenario() -> list[ReplicaResult | BaseException]:
        sender = grouped_sender(replicas, GroupBounds(slots=1, max_requests=8))
        sent = [asyncio.create_task(sender.submit(request(1.0)))]
        sent.append(asyncio.create_task(sender.submit(request(2.0))))
        await asyncio.sleep(0.005)  # [1, 2] in flight
        sent += [asyncio.create_task(sender.submit(request(v))) for v in (3.0, 4.0)]
        await asyncio.sleep(0.005)
        sent[1].cancel()  # its call goes on
        sent[2].cancel()  # still queued: never sent
        return list(await asyncio.gather(*sent, return_exceptions=True))

    answers = asyncio.run(scenario())
    assert replicas.groups == [[1.0, 2.0], [4.0]]
    assert isinstance(answers[1], asyncio.CancelledError)
    assert isinstance(answers[2], asyncio.CancelledError)
    assert [
        a.outputs["y"].tolist() for a in answers if isinstance(a, ReplicaResult)
    ] == [
        [2.0],
        [8.0],
    ]


@settings(max_examples=40, deadline=None)
@given(
    arrivals=st.lists(
        st.tuples(
            st.integers(min_value=0, max_value=2),  # ms before the next arrives
            st.integers(min_value=1, max_value=4),  # rows, 8 bytes each
            st.booleans(),  # refused by the replica
        ),
        min_size=1,
        max_size=40,
    ),
    slots=st.integers(min_value=1, max_value=4),
    max_requests=st.integers(min_value=1, max_value=6),
    max_bytes=st.integers(min_value=8, max_value=64),
)
def test_every_caller_gets_its_own_answer_in_order_within_the_bounds(
    arrivals: list[tuple[int, int, bool]],
    slots: int,
    max_requests: int,
    max_bytes: int,
) -> None:
    replicas = Replicas(count=2, seconds=0.002)

    async def scenario() -> list[ReplicaResult | BaseException]:
        bounds = GroupBounds(slots, max_requests, max_bytes)
        sender = grouped_sender(replicas, bounds)
        tasks = []
        for index, (gap_ms, rows, refused) in enumerate(arrivals):
            value = -(index + 1.0) if refused else index + 1.0
            tasks.append(asyncio.create_task(sender.submit(request(value, rows))))
            await asyncio.sleep(gap_ms / 1000)
        return list(await asyncio.gather(*tasks, return_exceptions=True))

    answers = asyncio.run(scenario())
    for index, ((_, rows, refused), answer) in enumerate(
        zip(arrivals, answers, strict=True)
    ):
        if refused:
            assert isinstance(answer, InvalidInput)
            assert answer.message == f"negative {-(index + 1.0)}"
        else:
            assert isinstance(answer, ReplicaResult)
            assert answer.outputs["y"].tolist() == [2 * (index + 1.0)] * rows
    # Sent once each, in arrival order.
    sent = [abs(value) for group in replicas.groups for value in group]
    assert sent == [index + 1.0 for index in range(len(arrivals))]
    assert all(1 <= len(group) <= max_requests for group in replicas.groups)
    assert all(
        size <= max_bytes or len(group) == 1
        for size, group in zip(replicas.bytes, replicas.groups, strict=True)
    )
    assert replicas.most_in_flight <= slots


def test_load_still_spreads_over_replicas() -> None:
    replicas = Replicas(count=4, seconds=0.005)
    clients, each = 64, 10

    async def client(
        submit: Callable[[Inputs], Awaitable[ReplicaResult]], offset: int
    ) -> None:
        for n in range(each):
            await submit(request(offset * each + n + 1.0))

    async def scenario() -> None:
        sender = grouped_sender(replicas, GroupBounds(slots=8, max_requests=16))
        await asyncio.gather(*(client(sender.submit, c) for c in range(clients)))

    asyncio.run(scenario())
    total = clients * each
    assert sum(replicas.requests) == total
    # 64 clients on 8 slots: requests were grouped ...
    assert len(replicas.groups) < total / 2
    # ... and every replica still took close to its share of them.
    assert all(0.15 * total <= n <= 0.35 * total for n in replicas.requests), (
        replicas.requests
    )


def test_answer_each_submits_members_at_once_and_answers_in_order() -> None:
    async def scenario() -> list[Answer]:
        arrived = 0
        everyone = asyncio.Event()

        async def submit(inputs: Inputs) -> ReplicaResult:
            nonlocal arrived
            arrived += 1
            if arrived == 3:
                everyone.set()
            # One after another, the first would wait here forever.
            await everyone.wait()
            await asyncio.sleep(0.01 * (3 - value_of(inputs)))  # last first
            if value_of(inputs) < 0:
                raise InvalidInput("negative")
            return ReplicaResult({"y": inputs["x"] * 2}, 0.0, 3)

        group = [request(1.0), request(-2.0), request(3.0)]
        return await asyncio.wait_for(answer_each(submit, group, "m/v1"), 2.0)

    first, refused, third = asyncio.run(scenario())
    assert isinstance(first, ReplicaResult)
    assert first.outputs["y"].tolist() == [2.0]
    assert isinstance(refused, InvalidInput)
    assert isinstance(third, ReplicaResult)
    assert third.outputs["y"].tolist() == [6.0]


def test_answer_each_turns_a_bug_into_that_members_typed_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def submit(inputs: Inputs) -> ReplicaResult:
        if value_of(inputs) == 2.0:
            raise KeyError("secret internals")
        return ReplicaResult({"y": inputs["x"]}, 0.0, 1)

    with caplog.at_level(logging.ERROR, logger="ray.serve"):
        answers = asyncio.run(answer_each(submit, [request(1.0), request(2.0)], "m/v1"))
    assert isinstance(answers[0], ReplicaResult)
    assert isinstance(answers[1], ModelError)
    assert answers[1].message == "m/v1 failed on this request: KeyError"
    assert "secret internals" in caplog.text


def test_bounds_of_a_version_with_the_default_spec() -> None:
    bounds = GroupBounds.for_version(VersionSpec(name="v1"), BATCHABLE)
    # One replica at most, 16 in flight its target: 16 calls before grouping.
    assert bounds == GroupBounds(slots=16, max_requests=16, max_bytes=GROUP_MAX_BYTES)


def test_bounds_follow_replicas_target_and_what_a_replica_runs_at_once() -> None:
    scaled = VersionSpec(
        name="v1",
        autoscaling=AutoscalingSpec(max_replicas=3, target_ongoing_requests=4.5),
        batching=BatchingSpec(max_batch_size=8),
    )
    assert GroupBounds.for_version(scaled, BATCHABLE) == GroupBounds(15, 8)
    # A replica that cannot stack runs UNBATCHED_CONCURRENCY at once.
    assert GroupBounds.for_version(scaled, FIXED).max_requests == UNBATCHED_CONCURRENCY
    unbatched = VersionSpec(
        name="v1",
        autoscaling=AutoscalingSpec(max_replicas=3),
        batching=BatchingSpec(max_batch_size=1),
    )
    assert GroupBounds.for_version(unbatched, BATCHABLE) == GroupBounds(
        3 * GROUP_MIN_SLOTS_PER_REPLICA, UNBATCHED_CONCURRENCY
    )


@given(
    max_replicas=st.integers(min_value=1, max_value=20),
    target=st.floats(min_value=0.1, max_value=100),
    max_batch_size=st.integers(min_value=1, max_value=64),
)
def test_slots_never_hide_load_from_the_autoscaler(
    max_replicas: int, target: float, max_batch_size: int
) -> None:
    """A router groups only past ``slots`` calls in flight, which must already
    read as at least ``max_replicas`` replicas' worth of the target."""
    version = VersionSpec(
        name="v1",
        autoscaling=AutoscalingSpec(
            max_replicas=max_replicas, target_ongoing_requests=target
        ),
        batching=BatchingSpec(max_batch_size=max_batch_size),
    )
    bounds = GroupBounds.for_version(version, BATCHABLE)
    assert bounds.slots >= max_replicas * target
    assert bounds.max_requests >= 1


def test_group_bounds_cover_the_versions_placed_in_replicas() -> None:
    spec = parse_spec(
        {
            "store": "/models",
            "models": [
                {
                    "name": "digits",
                    "versions": [
                        {"name": "v1", "placement": "router"},
                        {"name": "v2", "batching": {"max_batch_size": 4}},
                    ],
                }
            ],
        }
    )
    manifest = Manifest(runtime="onnx", signature=BATCHABLE, artifact="model.onnx")
    bounds = group_bounds(spec, {"digits": {"v1": manifest, "v2": manifest}})
    assert bounds == {"digits": {"v2": GroupBounds(slots=4, max_requests=4)}}
