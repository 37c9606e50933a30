"""One batch of requests on one model call, where each request fails alone.

A replica's :class:`~rayfleet.platform.serving.batcher.DynamicBatcher` hands the
requests it collected to a :class:`BatchRunner`, which stacks their inputs along
the first dimension, runs the model once and splits the outputs back by rows.

Nothing about one request may fail the others it was batched with. A zero-row
request is answered from the signature and never joins the batch (many runtimes
fail on an empty batch); requests whose inputs cannot be stacked with the rest
(other names, datatypes or trailing dimensions) run on their own; and when the
batched call raises, or its outputs cannot be split back by rows, every member
runs again alone, so only the one at fault gets an error.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable, Sequence

import numpy as np

from rayfleet.platform.config.signature import Signature
from rayfleet.platform.errors import RayfleetError
from rayfleet.platform.runtimes.base import zero_row_outputs
from rayfleet.platform.serving.counters import ReplicaCounters
from rayfleet.platform.serving.service import ReplicaResult

__all__ = ["BatchRunner", "Inputs", "Predict"]

Inputs = dict[str, np.ndarray]
# Runs the model on one (possibly stacked) request: outputs and model time in ms.
Predict = Callable[[Inputs], Awaitable[tuple[Inputs, float]]]
Answer = ReplicaResult | BaseException


class BatchRunner:
    """The batch function of a replica: ``await runner(requests)`` gives one
    result or exception per request, in order, and never raises."""

    def __init__(
        self, signature: Signature, predict: Predict, counters: ReplicaCounters
    ) -> None:
        self.signature = signature
        self.predict = predict
        self.counters = counters

    async def __call__(self, requests: list[Inputs]) -> list[Answer]:
        """Answer ``requests``: zero-row ones from the signature, the rest in as
        few model calls as their shapes allow."""
        answers: dict[int, Answer] = {}
        groups: dict[Hashable, list[int]] = {}
        for index, inputs in enumerate(requests):
            try:
                empty = zero_row_outputs(self.signature, inputs)
            except RayfleetError as error:
                answers[index] = error
                continue
            if empty is not None:
                answers[index] = ReplicaResult(empty, 0.0, 0)
                continue
            # A request that cannot be stacked gets a group of its own.
            key = _stack_key(inputs) or ("alone", index)
            groups.setdefault(key, []).append(index)
        # One group after another: the model runs one call at a time.
        for members in groups.values():
            results = await self._run([requests[i] for i in members])
            answers.update(zip(members, results, strict=True))
        return [answers[index] for index in range(len(requests))]

    async def _run(self, members: list[Inputs]) -> list[Answer]:
        if len(members) == 1:
            return await self._each_alone(members)
        rows = [len(next(iter(inputs.values()))) for inputs in members]
        try:
            stacked = {
                name: np.concatenate([inputs[name] for inputs in members])
                for name in members[0]
            }
            outputs, model_ms = await self.predict(stacked)
            parts = _split_rows(outputs, rows)
        except Exception:
            # Whichever member is at fault, it alone must hear about it.
            return await self._each_alone(members)
        self.counters.ran_batch(len(members))
        return [ReplicaResult(part, model_ms, len(members)) for part in parts]

    async def _each_alone(self, members: list[Inputs]) -> list[Answer]:
        if len(members) == 1:
            # The common case of a quiet model, without gather's task per member.
            try:
                return [await self._alone(members[0])]
            except Exception as error:
                return [error]
        return list(
            await asyncio.gather(
                *(self._alone(inputs) for inputs in members), return_exceptions=True
            )
        )

    async def _alone(self, inputs: Inputs) -> ReplicaResult:
        outputs, model_ms = await self.predict(inputs)
        self.counters.ran_batch(1)
        return ReplicaResult(outputs, model_ms, 1)


def _stack_key(inputs: Inputs) -> Hashable | None:
    """What two requests must share to be stacked: input names, datatypes and
    every dimension but the first, all inputs with the same number of rows.
    ``None`` when the request cannot be stacked at all."""
    arrays = [np.asarray(array) for array in inputs.values()]
    if not arrays or any(array.ndim == 0 for array in arrays):
        return None
    if len({array.shape[0] for array in arrays}) != 1:
        return None
    return tuple(
        sorted(
            (name, array.dtype.str, array.shape[1:])
            for name, array in zip(inputs, arrays, strict=True)
        )
    )


def _split_rows(outputs: Inputs, rows: Sequence[int]) -> list[Inputs]:
    """``outputs`` of a stacked call, cut back into each member's rows; ValueError
    when an output does not have one row per stacked input row."""
    total = sum(rows)
    for name, array in outputs.items():
        if np.ndim(array) == 0 or len(array) != total:
            raise ValueError(
                f"output {name!r} has shape {np.shape(array)}, not {total} rows"
            )
    edges = np.cumsum(rows)[:-1]
    per_output = {name: np.split(array, edges) for name, array in outputs.items()}
    return [
        {name: parts[index] for name, parts in per_output.items()}
        for index in range(len(rows))
    ]
