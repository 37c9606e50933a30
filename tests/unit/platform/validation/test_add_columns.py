"""Adding a flush's worth of observations at once (what a router does) gives the
statistics that adding them one by one gives: counts and histograms exactly,
sketches within their accuracy, samples of the same size from the same rows."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rayfleet.platform.validation.observation import Observation, ObservationColumns
from rayfleet.platform.validation.reservoir import Reservoir
from rayfleet.platform.validation.sketch import LatencySketch
from rayfleet.platform.validation.totals import Totals
from rayfleet.platform.validation.window import VersionStats, WindowedStats

T0 = 1_800_000_000.0
ACCURACY = 0.01

# The values a router can meet, edges included: a clock step's negative or NaN
# latency, predictions that are no class (NaN, infinite, fractional, too large
# for 64 bits), confidences outside [0, 1].
LATENCIES = st.one_of(
    st.floats(min_value=0, max_value=1e5),
    st.sampled_from([0.0, 1e-320, -1.0, math.nan, math.inf]),
)
PREDICTIONS = st.one_of(
    st.none(),
    st.sampled_from([0.0, 1.0, 2.0, 3.0, 7.0, 2.5, -1.0, 1e30, math.nan, math.inf]),
)
CONFIDENCES = st.one_of(
    st.none(),
    st.floats(min_value=-0.5, max_value=1.5),
    st.sampled_from([0.0, 1.0, math.nan]),
)


@st.composite
def _observation(draw: st.DrawFn, ts: st.SearchStrategy[float]) -> Observation:
    width = draw(st.integers(min_value=1, max_value=4))
    return Observation(
        "m",
        "v1",
        draw(ts),
        draw(LATENCIES),
        draw(LATENCIES),
        draw(st.sampled_from([200, 201, 400, 404, 429, 500, 503])),
        features=draw(st.none() | st.just(tuple(float(i) for i in range(width)))),
        prediction=draw(PREDICTIONS),
        confidence=draw(CONFIDENCES),
        shadow_of=draw(st.sampled_from([None, None, "v0"])),
    )


IN_ONE_BUCKET = st.lists(
    _observation(st.floats(min_value=T0, max_value=T0 + 9)), min_size=8, max_size=300
)
# Out of order, over more than the horizon: some rows arrive late.
OVER_THE_HORIZON = st.lists(
    _observation(st.floats(min_value=T0, max_value=T0 + 200)), max_size=300
)


def _assert_same(got: VersionStats, want: VersionStats) -> None:
    for name in (
        "requests",
        "errors",
        "client_errors",
        "shadow_requests",
        "statuses",
        "classes",
        "other_classes",
        "fractional_predictions",
        "confidence_bins",
        "first_ts",
        "last_ts",
    ):
        assert getattr(got, name) == getattr(want, name), name
    assert got.confidence_sum == pytest.approx(want.confidence_sum)
    for sketch, reference in (
        (got.latency, want.latency),
        (got.model_latency, want.model_latency),
    ):
        assert sketch.count == reference.count
        assert sketch.sum == pytest.approx(reference.sum)
        for q in (0.0, 0.5, 0.99, 1.0):
            value, expected = sketch.quantile(q), reference.quantile(q)
            assert (value is None) == (expected is None)
            if value is not None and expected is not None:
                assert math.isclose(value, expected, rel_tol=2 * ACCURACY)
    for sample, reference_sample in (
        (got.features, want.features),
        (got.predictions, want.predictions),
    ):
        assert (len(sample), sample.seen) == (
            len(reference_sample),
            reference_sample.seen,
        )


@settings(max_examples=80, deadline=None)
@given(IN_ONE_BUCKET, st.integers(min_value=1, max_value=4))
def test_version_stats_add_columns_as_row_by_row(
    observations: list[Observation], max_classes: int
) -> None:
    # A few classes and a small sample, so both limits are reached.
    one_by_one = VersionStats(sample_size=3, max_classes=max_classes)
    for observation in observations:
        one_by_one.add(observation)
    at_once = VersionStats(sample_size=3, max_classes=max_classes, seed=7)
    at_once.add_columns(ObservationColumns.of(observations))
    _assert_same(at_once, one_by_one)
    offered = {
        tuple(np.float32(v) for v in o.features)
        for o in observations
        if o.features is not None
    }
    assert {tuple(row.tolist()) for row in at_once.features} <= offered


@settings(max_examples=60, deadline=None)
@given(OVER_THE_HORIZON, st.integers(min_value=0, max_value=300))
def test_windowed_stats_add_columns_as_row_by_row(
    observations: list[Observation], split: int
) -> None:
    def windowed() -> WindowedStats:
        return WindowedStats(bucket_s=10, horizon_s=60, sample_size=3)

    one_by_one = windowed()
    for observation in observations:
        one_by_one.add(observation)
    # In two folds, as a router's flushes cut the traffic.
    at_once = windowed()
    at_once.add_columns(ObservationColumns.of(observations[:split]))
    at_once.add_columns(ObservationColumns.of(observations[split:]))
    assert at_once.dropped_late == one_by_one.dropped_late
    assert at_once.bucket_count == one_by_one.bucket_count
    now = max((o.ts for o in observations), default=T0)
    for got, want in zip(
        at_once.series(60, now), one_by_one.series(60, now), strict=True
    ):
        assert (got.start, got.requests, got.errors) == (
            want.start,
            want.requests,
            want.errors,
        )
    _assert_same(at_once.window(60, now), one_by_one.window(60, now))


@settings(max_examples=60, deadline=None)
@given(OVER_THE_HORIZON)
def test_totals_add_columns_as_row_by_row(observations: list[Observation]) -> None:
    one_by_one, at_once = Totals(), Totals()
    for observation in observations:
        one_by_one.add(observation)
    at_once.add_columns(ObservationColumns.of(observations))
    assert at_once.by_status == one_by_one.by_status
    assert at_once.latency_buckets == one_by_one.latency_buckets
    assert at_once.latency_count == one_by_one.latency_count
    assert at_once.latency_sum_ms == pytest.approx(
        one_by_one.latency_sum_ms, nan_ok=True
    )


@given(
    st.lists(st.floats(min_value=0, max_value=1, exclude_max=True), unique=True),
    st.integers(min_value=1, max_value=30),
    st.integers(min_value=0, max_value=40),
)
def test_reservoir_add_many_keeps_what_adding_one_by_one_keeps(
    priorities: list[float], capacity: int, already: int
) -> None:
    rng = random.Random(already)
    earlier = [rng.random() for _ in range(already)]
    one_by_one: Reservoir[int] = Reservoir(capacity)
    at_once: Reservoir[int] = Reservoir(capacity)
    for index, priority in enumerate(earlier):
        one_by_one.add(priority, -1 - index)
        at_once.add(priority, -1 - index)
    for index, priority in enumerate(priorities):
        one_by_one.add(priority, index)
    built: list[int] = []

    def item(index: int) -> int:
        built.append(index)
        return index

    at_once.add_many(np.array(priorities), item)
    assert sorted(at_once) == sorted(one_by_one)
    assert at_once.seen == one_by_one.seen
    assert len(built) <= capacity


@given(st.lists(st.floats(min_value=0, max_value=1e9), max_size=200))
def test_sketch_add_many_within_accuracy_of_one_by_one(values: list[float]) -> None:
    one_by_one, at_once = LatencySketch(ACCURACY), LatencySketch(ACCURACY)
    for value in values:
        one_by_one.add(value)
    at_once.add_many(np.array(values, dtype=np.float64))
    assert at_once.count == one_by_one.count
    assert at_once.sum == pytest.approx(one_by_one.sum)
    for q in (0.0, 0.25, 0.5, 0.9, 1.0):
        got, want = at_once.quantile(q), one_by_one.quantile(q)
        assert got == want or (
            got is not None
            and want is not None
            and math.isclose(got, want, rel_tol=2 * ACCURACY)
        )


@pytest.mark.parametrize("value", [-1.0, math.nan, math.inf])
def test_sketch_add_many_refuses_impossible_latencies(value: float) -> None:
    sketch = LatencySketch()
    with pytest.raises(ValueError, match="finite"):
        sketch.add_many(np.array([1.0, value]))
    assert sketch.count == 0


def test_columns_of_nothing_add_nothing() -> None:
    stats, windowed, totals = VersionStats(), WindowedStats(), Totals()
    empty = ObservationColumns.of([])
    stats.add_columns(empty)
    windowed.add_columns(empty)
    totals.add_columns(empty)
    assert (stats.requests, windowed.bucket_count, totals.requests) == (0, 0, 0)


def test_a_row_without_a_finite_time_is_dropped_late_not_bucketed() -> None:
    windowed = WindowedStats(bucket_s=10, horizon_s=60)
    observations = [
        Observation("m", "v1", ts, 5.0, 1.0, 200)
        for ts in (math.nan, T0, math.inf, T0 + 1)
    ]
    windowed.add_columns(ObservationColumns.of(observations))
    assert windowed.dropped_late == 2
    assert windowed.window(60, T0 + 1).requests == 2
