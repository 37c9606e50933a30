"""Routers' aggregated observations give the Validator the windows per-request rows
gave: exact counts and histograms, quantiles within the sketch's bound."""

from __future__ import annotations

import math
import pickle
import random

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rayfleet.platform.config.spec import ObservationSpec
from rayfleet.platform.serving.aggregate import (
    ObservationAggregator,
    ObservationSummary,
    windowed_stats,
)
from rayfleet.platform.validation.agreement import AgreementTracker
from rayfleet.platform.validation.observation import Observation
from rayfleet.platform.validation.totals import Totals
from rayfleet.platform.validation.window import VersionStats, WindowedStats

SPEC = ObservationSpec()
T0 = 1_800_000_000.0
VERSIONS = ("v1", "v2")


@st.composite
def _traffic(draw: st.DrawFn) -> list[Observation]:
    """Requests over about a minute (several buckets), in time order."""
    count = draw(st.integers(min_value=0, max_value=400))
    rng = random.Random(draw(st.integers(min_value=0, max_value=2**32)))
    observations = []
    ts = T0
    for index in range(count):
        ts += rng.expovariate(8.0)
        status = rng.choice((200, 200, 200, 200, 400, 404, 500, 503))
        latency = rng.lognormvariate(2.0, 1.0)
        answered = status == 200
        observations.append(
            Observation(
                "m",
                rng.choice(VERSIONS),
                ts,
                latency,
                latency / 3,
                status,
                features=tuple(rng.random() for _ in range(3))
                if rng.random() < 0.25 and answered
                else None,
                # Whole numbers are classes; the odd regression value counts apart.
                prediction=rng.choice((0.0, 1.0, 2.0, 7.0, 2.5)) if answered else None,
                confidence=rng.random() if answered else None,
                shadow_of="v1" if rng.random() < 0.1 else None,
                request_id=f"r{index}" if rng.random() < 0.2 else None,
            )
        )
    return observations


# Traffic, then how many routers share it, how many times they flush in its
# course, and the seed that picks who takes each request and who flushes when.
DELIVERIES = (
    _traffic(),
    st.integers(min_value=1, max_value=3),
    st.integers(min_value=0, max_value=12),
    st.integers(min_value=0, max_value=2**16),
)


def _aggregated(
    observations: list[Observation], routers: int, flushes: int, seed: int
) -> tuple[dict[str, WindowedStats], dict[str, Totals], ObservationSummary]:
    """The Validator's windows and totals after ``routers`` routers took the
    traffic between them and flushed it ``flushes`` times each; and one summary
    of every pair row they sent."""
    rng = random.Random(seed)
    aggregators = [ObservationAggregator(SPEC) for _ in range(routers)]
    stats = {v: windowed_stats(SPEC) for v in VERSIONS}
    totals = {v: Totals() for v in VERSIONS}
    pairs = ObservationSummary()

    def deliver(summary: ObservationSummary) -> None:
        # As Ray carries it: pickled.
        summary = pickle.loads(pickle.dumps(summary))
        for (_, version), part in summary.versions.items():
            stats[version].merge(part.stats)
            totals[version].merge(part.totals)
        pairs.pairs.extend(summary.pairs)

    cuts = set(
        rng.sample(range(len(observations) + 1), min(flushes, len(observations)))
    )
    for index, observation in enumerate(observations):
        if index in cuts:
            deliver(rng.choice(aggregators).take())
        rng.choice(aggregators).record(observation)
    for aggregator in aggregators:
        deliver(aggregator.take())
    return stats, totals, pairs


def _assert_same_counts(a: VersionStats, b: VersionStats) -> None:
    assert (a.requests, a.errors, a.client_errors, a.shadow_requests) == (
        b.requests,
        b.errors,
        b.client_errors,
        b.shadow_requests,
    )
    assert a.statuses == b.statuses
    assert (a.classes, a.other_classes, a.fractional_predictions) == (
        b.classes,
        b.other_classes,
        b.fractional_predictions,
    )
    assert a.confidence_bins == b.confidence_bins
    assert a.confidence_sum == pytest.approx(b.confidence_sum)
    assert (a.first_ts, a.last_ts) == (b.first_ts, b.last_ts)
    assert a.latency.count == b.latency.count
    assert a.model_latency.count == b.model_latency.count


def _within_sketch_bound(got: float | None, want: float | None) -> bool:
    if got is None or want is None:
        return got is want
    return math.isclose(got, want, rel_tol=2 * SPEC_ACCURACY)


SPEC_ACCURACY = VersionStats().relative_accuracy


@settings(max_examples=60, deadline=None)
@given(*DELIVERIES)
def test_aggregated_windows_equal_the_windows_of_rows(
    observations: list[Observation], routers: int, flushes: int, seed: int
) -> None:
    by_rows = {v: windowed_stats(SPEC) for v in VERSIONS}
    totals_by_rows = {v: Totals() for v in VERSIONS}
    for observation in observations:
        by_rows[observation.version].add(observation)
        totals_by_rows[observation.version].add(observation)
    aggregated, totals, _ = _aggregated(observations, routers, flushes, seed)

    now = observations[-1].ts if observations else T0
    for version in VERSIONS:
        for last_s in (5.0, 30.0, 600.0):
            want = by_rows[version].window(last_s, now)
            got = aggregated[version].window(last_s, now)
            _assert_same_counts(got, want)
            for q in (0.0, 0.5, 0.9, 0.99, 1.0):
                assert _within_sketch_bound(
                    got.latency.quantile(q), want.latency.quantile(q)
                )
                assert _within_sketch_bound(
                    got.model_latency.quantile(q), want.model_latency.quantile(q)
                )
            # A uniform sample of the same size, drawn from the same rows.
            assert len(got.features) == len(want.features)
            offered = {
                tuple(np.asarray(o.features, dtype=np.float32).tolist())
                for o in observations
                if o.version == version and o.features is not None
            }
            assert {tuple(row.tolist()) for row in got.features} <= offered
            assert len(got.predictions) == len(want.predictions)
        assert totals[version].by_status == totals_by_rows[version].by_status
        assert (
            totals[version].latency_buckets == totals_by_rows[version].latency_buckets
        )
        assert totals[version].latency_count == totals_by_rows[version].latency_count
        assert totals[version].latency_sum_ms == pytest.approx(
            totals_by_rows[version].latency_sum_ms
        )


@settings(max_examples=30, deadline=None)
@given(*DELIVERIES)
def test_shadow_pairs_agree_as_they_did_row_by_row(
    observations: list[Observation], routers: int, flushes: int, seed: int
) -> None:
    by_rows = AgreementTracker()
    for observation in observations:
        by_rows.add(observation)
    _, _, summary = _aggregated(observations, routers, flushes, seed)
    aggregated = AgreementTracker()
    for row in summary.pairs:
        aggregated.add(Observation.from_row(row))
    # Pairs meet in any order: the counts do not depend on who came first.
    assert aggregated.snapshot() == by_rows.snapshot()
    assert len(summary.pairs) == sum(o.request_id is not None for o in observations)


def _request(index: int, request_id: str | None = None) -> Observation:
    return Observation("m", "v1", T0 + index, 5.0, 2.0, 200, request_id=request_id)


def test_take_starts_afresh_and_counts_what_it_held() -> None:
    aggregator = ObservationAggregator(SPEC)
    for index in range(5):
        aggregator.record(_request(index))
    summary = aggregator.take()
    assert summary.observations == 5
    assert summary.versions[("m", "v1")].stats.window(60, T0 + 5).requests == 5
    assert aggregator.take().versions == {}


def test_only_waiting_pair_rows_call_for_an_early_flush() -> None:
    aggregator = ObservationAggregator(SPEC)
    for index in range(50):
        aggregator.record(_request(index))
    assert len(aggregator) == 0
    aggregator.record(_request(50, request_id="r50"))
    assert len(aggregator) == 1
    aggregator.take()
    assert len(aggregator) == 0


def test_pairs_past_the_bound_are_unpaired_and_lost_flushes_dropped() -> None:
    aggregator = ObservationAggregator(ObservationSpec(buffer_size=2))
    for index in range(4):
        aggregator.record(_request(index, request_id=f"r{index}"))
    summary = aggregator.take()
    # Every request is counted; only two of them can pair.
    assert summary.observations == 4
    assert len(summary.pairs) == 2
    assert summary.unpaired == {"m": 2}
    assert aggregator.dropped == 0
    aggregator.lose(summary)
    assert aggregator.dropped == 4
    assert aggregator.take().unpaired == {}


def test_a_small_summary_pickles_small() -> None:
    # Routers send one every second per version they served.
    aggregator = ObservationAggregator(SPEC)
    aggregator.record(_request(0))
    assert len(pickle.dumps(aggregator.take())) < 2_000


def test_routers_sample_the_same_traffic_independently() -> None:
    # Shared priorities would keep the same positions of every router's traffic,
    # and the sample merged from them would not be uniform; a model in the router
    # that seeds the random module must not make them shared.
    samples = []
    for _ in range(2):
        random.seed(0)
        aggregator = ObservationAggregator(SPEC)
        for index in range(2000):
            aggregator.record(
                Observation("m", "v1", T0, 5.0, 2.0, 200, features=(float(index),))
            )
        stats = aggregator.take().versions[("m", "v1")].stats.window(60, T0)
        samples.append({float(row[0]) for row in stats.features})
    assert len(samples[0]) == len(samples[1]) == 500
    assert samples[0] != samples[1]
