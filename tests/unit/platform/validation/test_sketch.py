from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rayfleet.platform.validation.sketch import LatencySketch

QUANTILES = (0.01, 0.1, 0.5, 0.9, 0.99, 0.999)


@pytest.fixture(scope="module")
def latencies() -> np.ndarray:
    return np.random.default_rng(42).lognormal(mean=1.5, sigma=0.8, size=100_000)


@pytest.fixture(scope="module")
def sketch(latencies: np.ndarray) -> LatencySketch:
    sketch = LatencySketch()
    for value in latencies.tolist():
        sketch.add(value)
    return sketch


def test_quantiles_within_one_percent(
    sketch: LatencySketch, latencies: np.ndarray
) -> None:
    assert sketch.count == latencies.size
    assert sketch.sum == pytest.approx(latencies.sum())
    for q in QUANTILES:
        estimate = sketch.quantile(q)
        assert estimate is not None
        # The guarantee is against the value of rank floor(q (n - 1)) ...
        exact = np.quantile(latencies, q, method="lower")
        assert abs(estimate - exact) <= 0.01 * exact
        # ... and on this many values it holds against interpolation too.
        assert estimate == pytest.approx(np.quantile(latencies, q), rel=0.01)


def test_merged_sketches_equal_one_sketch_of_all(
    sketch: LatencySketch, latencies: np.ndarray
) -> None:
    merged = LatencySketch()
    for part in np.array_split(latencies, 7):
        piece = LatencySketch()
        for value in part.tolist():
            piece.add(value)
        merged.merge(piece)
    assert merged.count == sketch.count
    for q in (0.0, *QUANTILES, 1.0):
        assert merged.quantile(q) == sketch.quantile(q)


def test_compact_form_round_trips(sketch: LatencySketch) -> None:
    data = json.loads(json.dumps(sketch.to_dict()))
    restored = LatencySketch.from_dict(data)
    assert restored.count == sketch.count
    assert restored.sum == sketch.sum
    for q in (0.0, *QUANTILES, 1.0):
        assert restored.quantile(q) == sketch.quantile(q)
    # A restored sketch keeps working: it still merges and takes values.
    restored.merge(sketch)
    restored.add(1.0)
    assert restored.count == 2 * sketch.count + 1
    assert len(pickle.dumps(sketch)) < 20_000


def test_empty_sketch() -> None:
    sketch = LatencySketch()
    assert (sketch.count, sketch.mean, sketch.quantile(0.5)) == (0, None, None)
    restored = LatencySketch.from_dict(json.loads(json.dumps(sketch.to_dict())))
    assert restored.count == 0 and restored.quantile(0.99) is None


def test_zero_and_copy_are_independent() -> None:
    sketch = LatencySketch()
    sketch.add(0.0)
    twin = sketch.copy()
    twin.add(100.0)
    assert sketch.count == 1 and twin.count == 2
    assert sketch.quantile(1.0) == 0.0


def test_memory_is_bounded_by_bin_limit() -> None:
    sketch = LatencySketch(bin_limit=64)
    for exponent in range(-300, 300):
        sketch.add(10.0**exponent)
    state = sketch.to_dict()
    assert len(state["positive"]["counts"]) <= 64 and state["positive"]["collapsed"]
    top = sketch.quantile(1.0)
    assert top is not None and top == pytest.approx(1e299, rel=0.01)


@pytest.mark.parametrize("value", [-1.0, float("nan"), float("inf")])
def test_rejects_impossible_latencies(value: float) -> None:
    with pytest.raises(ValueError, match="finite"):
        LatencySketch().add(value)


def test_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="relative_accuracy"):
        LatencySketch(relative_accuracy=0)
    with pytest.raises(ValueError, match="q must be"):
        LatencySketch().quantile(1.5)
    with pytest.raises(ValueError, match="different relative accuracy"):
        LatencySketch(0.01).merge(LatencySketch(0.02))


# -- order statistics, for the rollout's confidence bounds ----------------------


def _ranks_within_bounds(sketch: LatencySketch, values: np.ndarray) -> None:
    ordered = np.sort(values)
    for rank in range(1, ordered.size + 1):
        low, high = sketch.rank_bounds(rank)
        assert low <= ordered[rank - 1] <= high, rank


@settings(max_examples=40, deadline=None)
@given(
    st.lists(
        st.sampled_from([0.0, 1.0, 2.0])
        | st.floats(0, 1e6, allow_nan=False, allow_infinity=False),
        min_size=1,
        max_size=300,
    )
)
def test_every_order_statistic_lies_within_its_rank_bounds(values: list[float]) -> None:
    sketch = LatencySketch()
    for value in values:
        sketch.add(value)
    _ranks_within_bounds(sketch, np.asarray(values))


def test_rank_bounds_are_one_bin_wide_on_a_heavy_tail(latencies: np.ndarray) -> None:
    rng = np.random.default_rng(7)
    values = np.concatenate([latencies[:3000], 4.0 * (1 + rng.pareto(1.1, 1000))])
    sketch = LatencySketch()
    for value in values.tolist():
        sketch.add(value)
    _ranks_within_bounds(sketch, values)
    # 1% relative accuracy: a bin spans (v / 1.01, v / 0.99], about 2%.
    widths = [high / low for low, high in map(sketch.rank_bounds, range(1, 4001))]
    assert max(widths) <= 1.0203
    # The ends are exact: the sketch keeps its minimum and maximum.
    assert sketch.rank_bounds(1)[0] == values.min()
    assert sketch.rank_bounds(4000)[1] == values.max()


def test_rank_bounds_survive_collapsed_bins_and_a_round_trip() -> None:
    values = np.array([10.0**e for e in range(-12, 12)] * 3)
    sketch = LatencySketch(bin_limit=16)
    for value in values.tolist():
        sketch.add(value)
    assert sketch.to_dict()["positive"]["collapsed"]
    _ranks_within_bounds(sketch, values)
    restored = LatencySketch.from_dict(json.loads(json.dumps(sketch.to_dict())))
    assert [restored.rank_bounds(r) for r in range(1, 73)] == [
        sketch.rank_bounds(r) for r in range(1, 73)
    ]


@pytest.mark.parametrize("rank", [0, 4, -1])
def test_rank_bounds_refuse_ranks_outside_the_count(rank: int) -> None:
    sketch = LatencySketch()
    for value in (1.0, 2.0, 3.0):
        sketch.add(value)
    with pytest.raises(ValueError, match=r"rank must be in \[1, 3\]"):
        sketch.rank_bounds(rank)
