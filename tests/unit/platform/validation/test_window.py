from __future__ import annotations

import pickle
import random
from dataclasses import replace

import numpy as np
import pytest

from rayfleet.platform.validation.observation import Observation
from rayfleet.platform.validation.window import VersionStats, WindowedStats


def _obs(
    ts: float = 100.0,
    *,
    latency: float = 10.0,
    status: int = 200,
    prediction: float | None = 1.0,
    confidence: float | None = 0.9,
    features: tuple[float, ...] | None = (1.0, 2.0),
    shadow_of: str | None = None,
) -> Observation:
    return Observation(
        "m",
        "v1",
        ts,
        latency,
        latency / 2,
        status,
        features,
        prediction,
        confidence,
        shadow_of,
    )


def test_counts_errors_apart_from_client_errors() -> None:
    stats = VersionStats()
    for status in (200, 200, 201, 404, 429, 500, 503):
        stats.add(_obs(status=status))
    stats.add(_obs(shadow_of="v0"))
    assert (stats.requests, stats.errors, stats.client_errors) == (8, 2, 2)
    assert stats.statuses == {200: 3, 201: 1, 404: 1, 429: 1, 500: 1, 503: 1}
    assert stats.error_rate == 2 / 8 and stats.shadow_requests == 1
    # Latency counts only successes: a fast failure must not flatter p50.
    assert stats.latency.count == 4 and stats.model_latency.count == 4


def test_predictions_confidence_and_samples() -> None:
    stats = VersionStats(sample_size=3)
    for label in (0, 1, 1, 2, 2, 2):
        stats.add(_obs(prediction=float(label), confidence=label / 2))
    stats.add(_obs(prediction=None, confidence=None, features=None))
    assert stats.classes == {0: 1, 1: 2, 2: 3} and stats.categorical
    assert stats.mean_confidence == pytest.approx(8 / 2 / 6)
    assert stats.confidence_bins[0] == 1 and stats.confidence_bins[-1] == 3
    assert len(stats.features) == 3 and stats.features.seen == 6
    columns = stats.feature_columns()
    assert list(columns) == ["f0", "f1"] and columns["f1"].tolist() == [2.0] * 3
    assert stats.prediction_values().size == 3


def test_regression_predictions_and_bounded_classes() -> None:
    stats = VersionStats(max_classes=2)
    for value in (1.0, 2.0, 3.0, 2.5, float("nan")):
        stats.add(_obs(prediction=value))
    assert stats.classes == {1: 1, 2: 1} and stats.other_classes == 1
    assert stats.fractional_predictions == 1 and not stats.categorical


def test_feature_columns_pad_short_vectors_and_bad_latency_is_dropped() -> None:
    stats = VersionStats()
    stats.add(_obs(features=(1.0,)))
    stats.add(_obs(features=(1.0, 2.0, 3.0), latency=float("nan")))
    columns = stats.feature_columns()
    assert sorted(np.isnan(columns["f2"]).tolist()) == [False, True]
    assert stats.latency.count == 1 and VersionStats().feature_columns() == {}


def test_merge_equals_adding_everything_to_one() -> None:
    rng = random.Random(5)
    observations = [
        _obs(
            ts=rng.uniform(0, 100),
            latency=rng.lognormvariate(2, 0.5),
            status=rng.choice([200, 200, 200, 404, 500]),
            prediction=float(rng.randrange(5)),
            confidence=rng.random(),
        )
        for _ in range(3000)
    ]
    whole = VersionStats()
    whole.add_many(observations)
    merged = VersionStats()
    for start in range(0, 3000, 700):
        part = VersionStats(seed=start)
        part.add_many(observations[start : start + 700])
        merged.merge(part)
    merged_summary, whole_summary = merged.summary(), whole.summary()
    assert merged_summary.mean_confidence == pytest.approx(
        whole_summary.mean_confidence
    )
    assert replace(merged_summary, mean_confidence=0) == replace(
        whole_summary, mean_confidence=0
    )
    assert merged.classes == whole.classes and merged.statuses == whole.statuses
    assert merged.confidence_bins == whole.confidence_bins
    assert (merged.first_ts, merged.last_ts) == (whole.first_ts, whole.last_ts)
    assert len(merged.features) == whole.sample_size
    pickle.loads(pickle.dumps(merged))


def test_window_merges_the_buckets_it_touches() -> None:
    windowed = WindowedStats(bucket_s=10, horizon_s=100)
    for second in range(60):
        windowed.add(_obs(ts=1000.0 + second, status=500 if second >= 50 else 200))
    # [1054, 1059] lies in the bucket starting at 1050 only.
    last = windowed.window(5, now=1059.0)
    assert (last.requests, last.errors) == (10, 10)
    # Bucket-aligned: [1049, 1059] touches the buckets starting 1040 and 1050.
    assert windowed.window(10, now=1059.0).requests == 20
    assert windowed.window(3600, now=1059.0).requests == 60
    assert windowed.window(10, now=2000.0).requests == 0


def test_series_has_a_point_per_bucket() -> None:
    windowed = WindowedStats(bucket_s=10, horizon_s=100)
    windowed.add(_obs(ts=1000.0, latency=5.0))
    windowed.add(_obs(ts=1021.0, latency=50.0, status=503))
    points = windowed.series(30, now=1029.0)
    assert [p.start for p in points] == [990.0, 1000.0, 1010.0, 1020.0]
    assert [p.requests for p in points] == [0, 1, 0, 1]
    assert points[0].p50_ms is None and points[1].p50_ms == pytest.approx(5, rel=0.01)
    assert points[3].error_rate == 1.0 and points[3].p99_ms is None
    assert points[1].to_dict()["p99_ms"] == pytest.approx(5, rel=0.01)


def test_horizon_evicts_and_late_observations_are_dropped() -> None:
    windowed = WindowedStats(bucket_s=10, horizon_s=60, sample_horizon_s=20)
    for second in range(0, 200, 5):
        windowed.add(_obs(ts=float(second)))
    assert windowed.bucket_count == windowed.max_buckets == 6
    windowed.add(_obs(ts=5.0))
    assert windowed.dropped_late == 1
    # Samples survive only in the newest buckets; counts survive in all.
    window = windowed.window(60, now=199.0)
    assert window.requests == 12 and len(window.features) == 4


def test_windowed_merge() -> None:
    left, right = WindowedStats(), WindowedStats(seed=1)
    left.add(_obs(ts=100.0))
    right.add(_obs(ts=105.0))
    right.add(_obs(ts=200.0))
    left.merge(right)
    assert left.window(200, now=200.0).requests == 3
    with pytest.raises(ValueError, match="cannot merge"):
        left.merge(WindowedStats(bucket_s=5))


def test_memory_is_bounded_under_heavy_traffic() -> None:
    windowed = WindowedStats(bucket_s=10, horizon_s=600, sample_horizon_s=60)
    latencies = np.random.default_rng(0).lognormal(2, 0.7, 100_000).tolist()
    pixels = tuple(float(v) for v in range(63))
    start, step = 1_700_000_000.0, 0.072  # 100,000 requests over 2 hours
    for i, latency in enumerate(latencies):
        windowed.add(
            _obs(
                ts=start + i * step,
                latency=latency,
                prediction=float(i % 10),
                features=(float(i), *pixels),
            )
        )
    assert windowed.bucket_count <= windowed.max_buckets
    now = start + 100_000 * step
    recent = windowed.window(600, now)
    assert recent.requests == pytest.approx(600 / step, abs=2 * 10 / step)
    assert recent.latency.quantile(0.5) == pytest.approx(np.exp(2), rel=0.05)
    # The sample is full, and drawn from the last minute (plus one bucket) only.
    oldest_sampled = recent.feature_columns()["f0"].min()
    assert len(recent.features) == 500 and oldest_sampled >= 100_000 - 70 / step
    assert len(pickle.dumps(windowed)) < 3_000_000


def test_rejects_bad_settings() -> None:
    with pytest.raises(ValueError, match="bucket_s"):
        WindowedStats(bucket_s=0)
