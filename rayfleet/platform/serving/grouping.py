"""Requests for one version carried to its replicas in groups, one call a group.

Every call from the router to a replica through a Serve handle costs a fixed share
of CPU in both processes (serialisation, the handle's routing, the replica's
request handling), whatever it carries: a version one hop away served 410
requests/s at 32 clients where the same model in the router served 1457. So the
router sends the requests for a version that queue while all its calls are in
flight together, in one call, and the replica answers each member on its own.

The router's send queue is the replicas' own :class:`DynamicBatcher`, with
``max_wait_s=0``: it never waits for company, and cuts a group from whatever is
queued whenever one of the version's call slots is free. Below that many requests
in flight every request goes alone, as before; grouping starts only when the
router would otherwise queue them behind Serve's handle.

Each member fails alone: the replica returns one result or error per member
(:func:`answer_each`), and the router raises a member's error to its caller only.
A failure of the whole call (no replica can take it, one died twice) reaches every
member of that group and no other. A caller that gives up leaves its group alone:
the call goes on, and its answer is dropped.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from rayfleet.platform.config.signature import Signature
from rayfleet.platform.config.spec import PlatformSpec, VersionSpec
from rayfleet.platform.config.store import Manifest
from rayfleet.platform.constants import (
    GROUP_MAX_BYTES,
    GROUP_MIN_SLOTS_PER_REPLICA,
    UNBATCHED_CONCURRENCY,
)
from rayfleet.platform.errors import ModelError, RayfleetError
from rayfleet.platform.serving.batcher import DynamicBatcher
from rayfleet.platform.serving.service import ReplicaResult
from rayfleet.platform.serving.stacking import Inputs

__all__ = [
    "Answer",
    "GroupBounds",
    "GroupCall",
    "answer_each",
    "group_bounds",
    "grouped_sender",
    "inputs_nbytes",
    "replica_batches",
]

logger = logging.getLogger("ray.serve")

# What a replica answers for one member of a group.
Answer = ReplicaResult | RayfleetError
# One call to a version's replicas: one answer per member, in order.
GroupCall = Callable[[list[Inputs]], Awaitable[Sequence[Answer]]]


def replica_batches(version: VersionSpec, signature: Signature) -> bool:
    """Whether a replica of ``version`` stacks requests into batches: it runs them
    ``max_batch_size`` at a time when it does, ``UNBATCHED_CONCURRENCY`` when not."""
    return version.batching.max_batch_size > 1 and signature.batchable


@dataclass(frozen=True)
class GroupBounds:
    """How the router calls one version's replicas: ``slots`` calls in flight at
    once, each carrying at most ``max_requests`` requests and ``max_bytes`` of
    inputs (or one request larger than that)."""

    slots: int
    max_requests: int
    max_bytes: int = GROUP_MAX_BYTES

    @classmethod
    def for_version(cls, version: VersionSpec, signature: Signature) -> GroupBounds:
        """The bounds for ``version``, whose requests match ``signature``.

        Slots: Serve's autoscaler counts calls in flight, not requests, so a
        router must be able to hold ``max_replicas`` times the target of them
        before it groups anything. Below that every call carries one request
        and the count is exact; at it, the router's queue is not empty only
        when the replicas hold at least the target each at ``max_replicas``,
        which is what the count then says. Fewer slots would make bigger groups
        but hide load from the autoscaler; more only make groups smaller. At
        least ``GROUP_MIN_SLOTS_PER_REPLICA`` a replica, so that one group is
        on its way while another runs.

        Size: what a replica runs in one go (a batch, or its unbatched
        concurrency), so no member waits on the replica for another member's
        model call, and each batch's worth of work gets its own choice of
        replica from Serve's power-of-two balancing.
        """
        per_replica = max(
            math.ceil(version.target_ongoing_requests), GROUP_MIN_SLOTS_PER_REPLICA
        )
        return cls(
            slots=version.autoscaling.max_replicas * per_replica,
            max_requests=(
                version.batching.max_batch_size
                if replica_batches(version, signature)
                else UNBATCHED_CONCURRENCY
            ),
        )


def group_bounds(
    spec: PlatformSpec, manifests: Mapping[str, Mapping[str, Manifest]]
) -> dict[str, dict[str, GroupBounds]]:
    """:class:`GroupBounds` of every version placed in its own replicas."""
    return {
        model.name: {
            version.name: GroupBounds.for_version(
                version, manifests[model.name][version.name].signature
            )
            for version in model.versions
            if version.placement == "replica"
        }
        for model in spec.models
    }


def inputs_nbytes(inputs: Inputs) -> int:
    """The bytes a request's inputs carry: their arrays' buffers, plus each
    element's own bytes in an object (BYTES) array, whose buffer holds only
    references."""
    total = 0
    for array in inputs.values():
        total += array.nbytes
        if array.dtype == np.object_:
            total += sum(
                len(element)
                for element in array.flat
                if isinstance(element, bytes | str)
            )
    return total


def grouped_sender(
    call: GroupCall, bounds: GroupBounds
) -> DynamicBatcher[Inputs, ReplicaResult]:
    """The router's send queue for one version: ``await sender.submit(inputs)``
    sends the request in the next group ``call`` carries and gives its answer, or
    raises its error (a member's own, or the whole call's)."""
    return DynamicBatcher(
        call,
        max_batch_size=bounds.max_requests,
        max_wait_s=0.0,
        max_concurrent=bounds.slots,
        size_of=inputs_nbytes,
        max_batch_bytes=bounds.max_bytes,
    )


async def answer_each(
    submit: Callable[[Inputs], Awaitable[ReplicaResult]],
    group: list[Inputs],
    where: str,
) -> list[Answer]:
    """A replica's answer to ``group``: every member submitted at once, so they
    queue together, and one result or error per member, in order.

    A member's :class:`RayfleetError` is its answer, never raised, so it fails
    alone. Anything else a member raises is a bug on the replica: it is logged
    here and answered as a :class:`ModelError` naming ``where`` (model/version)
    but not the bug's message, which stays in the log.
    """
    results = await asyncio.gather(
        *(submit(inputs) for inputs in group), return_exceptions=True
    )
    answers: list[Answer] = []
    for result in results:
        if isinstance(result, ReplicaResult | RayfleetError):
            answers.append(result)
            continue
        logger.error(
            "%s: a grouped request failed unexpectedly",
            where,
            exc_info=(type(result), result, result.__traceback__),
        )
        answers.append(
            ModelError(f"{where} failed on this request: {type(result).__name__}")
        )
    return answers
