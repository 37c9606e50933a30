"""BatchRunner: a replica's batch function, where every request fails alone.

Driven through the DynamicBatcher as a replica drives it, with good requests in
the same batch as the bad one, which must get their own right answers."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from rayfleet.platform.config.signature import Signature
from rayfleet.platform.errors import InvalidInput, ModelError
from rayfleet.platform.serving.batcher import DynamicBatcher
from rayfleet.platform.serving.counters import ReplicaCounters
from rayfleet.platform.serving.service import ReplicaResult
from rayfleet.platform.serving.stacking import BatchRunner, Inputs

SIGNATURE = Signature.model_validate(
    {
        "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, -1]}],
        "outputs": [
            {"name": "total", "datatype": "FP32", "shape": [-1]},
            {"name": "label", "datatype": "INT64", "shape": [-1, 1]},
        ],
    }
)


class RowSums:
    """A model that sums each row, refuses empty batches and rows holding NaN,
    as real runtimes refuse what they cannot compute."""

    def __init__(self, *, unsplittable: bool = False) -> None:
        self.batches: list[int] = []
        self.unsplittable = unsplittable

    async def __call__(self, inputs: Inputs) -> tuple[Inputs, float]:
        x = inputs["x"]
        self.batches.append(len(x))
        if len(x) == 0:
            raise ModelError("cannot run an empty batch")
        if np.isnan(x).any():
            raise ModelError("NaN in the input")
        total = x.sum(axis=1).astype(np.float32)
        if self.unsplittable and len(x) > 1:
            # A model that (wrongly) answers a batch with one aggregate row.
            total = total[:1]
        label = np.zeros((len(total), 1), dtype=np.int64)
        return {"total": total, "label": label}, 1.5


def good(value: float, count: int = 1, width: int = 2) -> Inputs:
    return {"x": np.full((count, width), value, dtype=np.float32)}


def run_in_one_batch(
    runner: BatchRunner, requests: list[Inputs]
) -> list[ReplicaResult | BaseException]:
    """Submit ``requests`` together, so the batcher cuts them as one batch."""

    async def scenario() -> list[ReplicaResult | BaseException]:
        batcher: DynamicBatcher[Inputs, ReplicaResult] = DynamicBatcher(
            runner, max_batch_size=len(requests), max_wait_s=0.5
        )
        tasks = [asyncio.create_task(batcher.submit(r)) for r in requests]
        return list(await asyncio.gather(*tasks, return_exceptions=True))

    return asyncio.run(scenario())


def totals(result: ReplicaResult | BaseException) -> list[float]:
    assert isinstance(result, ReplicaResult), result
    return [float(v) for v in result.outputs["total"]]


def test_a_zero_row_request_never_joins_the_batch() -> None:
    model, counters = RowSums(), ReplicaCounters()
    runner = BatchRunner(SIGNATURE, model, counters)
    empty = {"x": np.zeros((0, 2), dtype=np.float32)}
    results = run_in_one_batch(runner, [good(1.0), empty, good(2.0, 2)])

    assert totals(results[0]) == [2.0]
    assert totals(results[2]) == [4.0, 4.0]
    answer = results[1]
    assert isinstance(answer, ReplicaResult) and answer.batch_size == 0
    assert answer.outputs["total"].shape == (0,)
    assert answer.outputs["total"].dtype == np.float32
    assert answer.outputs["label"].shape == (0, 1)
    assert answer.outputs["label"].dtype == np.int64
    # One model call over the three rows of the two good requests, none empty.
    assert model.batches == [3]
    assert counters.batches == {2: 1}


def test_a_request_the_model_refuses_fails_alone() -> None:
    model = RowSums()
    runner = BatchRunner(SIGNATURE, model, ReplicaCounters())
    bad = good(float("nan"))
    results = run_in_one_batch(runner, [good(1.0), bad, good(3.0)])

    assert totals(results[0]) == [2.0]
    assert isinstance(results[1], ModelError)
    assert totals(results[2]) == [6.0]
    # The batch of three failed, then each ran alone.
    assert model.batches == [3, 1, 1, 1]


def test_requests_that_cannot_be_stacked_run_on_their_own() -> None:
    model = RowSums()
    runner = BatchRunner(SIGNATURE, model, ReplicaCounters())
    wide = good(1.0, width=5)
    as_float64 = {"x": np.ones((1, 2), dtype=np.float64)}
    scalar = {"x": np.float32(1.0)}
    results = run_in_one_batch(runner, [good(1.0), wide, good(2.0), as_float64, scalar])

    assert totals(results[0]) == [2.0]
    assert totals(results[1]) == [5.0]
    assert totals(results[2]) == [4.0]
    assert totals(results[3]) == [2.0]
    # The model's own error on a 0-d input is that request's alone.
    assert isinstance(results[4], Exception)
    # One call for the two that stack, then one each for the wide and float64
    # requests; the 0-d one fails inside the model before it counts a batch.
    assert model.batches == [2, 1, 1]


def test_outputs_that_cannot_be_split_are_recomputed_one_by_one() -> None:
    model = RowSums(unsplittable=True)
    runner = BatchRunner(SIGNATURE, model, ReplicaCounters())
    results = run_in_one_batch(runner, [good(1.0), good(2.0), good(3.0)])

    assert [totals(r) for r in results] == [[2.0], [4.0], [6.0]]
    assert model.batches == [3, 1, 1, 1]


def test_zero_rows_where_an_output_has_no_batch_dimension_is_refused() -> None:
    signature = Signature.model_validate(
        {
            "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 2]}],
            "outputs": [{"name": "mean", "datatype": "FP32", "shape": [2]}],
        }
    )

    async def mean(inputs: Inputs) -> tuple[Inputs, float]:
        return {"mean": inputs["x"].mean(axis=0)}, 1.0

    runner = BatchRunner(signature, mean, ReplicaCounters())
    empty = {"x": np.zeros((0, 2), dtype=np.float32)}
    results = run_in_one_batch(runner, [empty, good(1.0)])

    assert isinstance(results[0], InvalidInput)
    assert "zero rows" in results[0].message
    assert isinstance(results[1], ReplicaResult)
    assert results[1].outputs["mean"].tolist() == [1.0, 1.0]


@pytest.mark.parametrize("size", [1, 2, 7])
def test_every_member_of_a_good_batch_gets_its_own_rows(size: int) -> None:
    model, counters = RowSums(), ReplicaCounters()
    runner = BatchRunner(SIGNATURE, model, counters)
    requests = [good(float(i), count=i % 3 + 1) for i in range(size)]
    results = run_in_one_batch(runner, requests)

    for i, result in enumerate(results):
        assert totals(result) == [2.0 * i] * (i % 3 + 1)
        assert isinstance(result, ReplicaResult) and result.batch_size == size
    assert counters.batches == {size: 1}
