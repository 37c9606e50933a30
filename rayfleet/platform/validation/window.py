"""Per-version statistics over time windows, bounded in memory whatever the traffic.

:class:`VersionStats` accumulates one version's observations: counts, latency
sketches, predicted classes, a confidence histogram and uniform samples of
features and predictions. Everything in it merges, so :class:`WindowedStats` keeps
one per time bucket (10 s by default, for an hour) and answers "the last T seconds"
by merging buckets, and "a time series" by reading them one by one.

Memory per version is bounded by the bucket count times what one bucket holds:
two sketches of at most ``bin_limit`` bins, at most ``max_classes`` class counts,
20 histogram bins, and samples of at most ``sample_size`` rows, which are kept
only for the last ``sample_horizon_s``. With the defaults and 64 features that is
at most about 20 MB per version (measured: 300 KB for a bucket with full samples,
60 such buckets, and a few KB for each of the other 300), reached only above 50
requests a second.
"""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from rayfleet.platform.validation._json import json_float
from rayfleet.platform.validation.observation import Observation, ObservationColumns
from rayfleet.platform.validation.reservoir import Reservoir
from rayfleet.platform.validation.sketch import LatencySketch

__all__ = ["BucketPoint", "VersionStats", "VersionSummary", "WindowedStats"]

CONFIDENCE_BINS = 20


@dataclass(frozen=True)
class VersionSummary:
    """The headline numbers of a :class:`VersionStats`, JSON-ready."""

    requests: int
    errors: int
    client_errors: int
    error_rate: float | None
    p50_ms: float | None
    p99_ms: float | None
    model_p50_ms: float | None
    model_p99_ms: float | None
    mean_confidence: float | None
    shadow_requests: int

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dict of the summary."""
        return {
            "requests": self.requests,
            "errors": self.errors,
            "client_errors": self.client_errors,
            "error_rate": json_float(self.error_rate),
            "p50_ms": json_float(self.p50_ms),
            "p99_ms": json_float(self.p99_ms),
            "model_p50_ms": json_float(self.model_p50_ms),
            "model_p99_ms": json_float(self.model_p99_ms),
            "mean_confidence": json_float(self.mean_confidence),
            "shadow_requests": self.shadow_requests,
        }


class VersionStats:
    """What one version's requests looked like, over some span of time.

    - ``requests`` counts every observation, mirrored (shadow) ones included, as
      they measure the version too; ``shadow_requests`` counts those.
    - ``errors`` are 5xx, the server's; ``client_errors`` are 4xx, which say
      nothing about the version and are kept apart. ``statuses`` counts each code.
    - ``latency`` and ``model_latency`` sketch only requests that succeeded
      (status below 400): an error that fails fast would otherwise flatter p50.
    - ``classes`` counts whole-number predictions (class ids), at most
      ``max_classes`` distinct ones, the rest in ``other_classes``;
      ``fractional_predictions`` counts the others, which mark a regressor.
    - ``features`` and ``predictions`` are uniform samples of at most
      ``sample_size`` requests, for drift tests.
    """

    def __init__(
        self,
        *,
        sample_size: int = 500,
        max_classes: int = 1000,
        relative_accuracy: float = 0.01,
        seed: int = 0,
    ) -> None:
        self.sample_size = sample_size
        self.max_classes = max_classes
        self.relative_accuracy = relative_accuracy
        self.requests = 0
        self.errors = 0
        self.client_errors = 0
        self.shadow_requests = 0
        self.statuses: dict[int, int] = {}
        self.latency = LatencySketch(relative_accuracy)
        self.model_latency = LatencySketch(relative_accuracy)
        self.classes: dict[int, int] = {}
        self.other_classes = 0
        self.fractional_predictions = 0
        self.confidence_bins = [0] * CONFIDENCE_BINS
        self.confidence_sum = 0.0
        self.features: Reservoir[np.ndarray] = Reservoir(sample_size)
        self.predictions: Reservoir[float] = Reservoir(sample_size)
        self.first_ts: float | None = None
        self.last_ts: float | None = None
        self._rng = random.Random(seed)

    def __repr__(self) -> str:
        return f"VersionStats({self.summary()})"

    def __getstate__(self) -> dict[str, Any]:
        # Routers pickle these to the Validator every flush; the generator's
        # state is 3.8 KB of the few a small bucket holds, and a receiver only
        # merges what it gets.
        state = self.__dict__.copy()
        del state["_rng"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._rng = random.Random()

    def add(self, observation: Observation) -> None:
        """Account for one observation."""
        # Every router runs this once per request: plain comparisons and locals
        # rather than the observation's properties and min()/max().
        obs = observation
        status = obs.status
        self.requests += 1
        self.statuses[status] = self.statuses.get(status, 0) + 1
        if status >= 500:
            self.errors += 1
        elif status >= 400:
            self.client_errors += 1
        if obs.shadow_of is not None:
            self.shadow_requests += 1
        if status < 400:
            _add_latency(self.latency, obs.latency_ms)
            _add_latency(self.model_latency, obs.model_ms)
        ts = obs.ts
        if self.first_ts is None or ts < self.first_ts:
            self.first_ts = ts
        if self.last_ts is None or ts > self.last_ts:
            self.last_ts = ts
        priority = self._rng.random()
        prediction = obs.prediction
        if prediction is not None and math.isfinite(prediction):
            self._add_prediction(float(prediction), priority)
        confidence = obs.confidence
        if confidence is not None and math.isfinite(confidence):
            index = int(min(max(confidence, 0.0), 1.0) * CONFIDENCE_BINS)
            self.confidence_bins[min(index, CONFIDENCE_BINS - 1)] += 1
            self.confidence_sum += confidence
        # Only rows the sample keeps are worth converting to an array.
        if obs.features is not None:
            if priority < self.features.threshold:
                self.features.add(priority, np.asarray(obs.features, dtype=np.float32))
            else:
                self.features.seen += 1

    def _add_prediction(self, prediction: float, priority: float) -> None:
        self.predictions.add(priority, prediction)
        if not prediction.is_integer():
            self.fractional_predictions += 1
            return
        label = int(prediction)
        if label in self.classes or len(self.classes) < self.max_classes:
            self.classes[label] = self.classes.get(label, 0) + 1
        else:
            self.other_classes += 1

    def add_many(self, observations: Sequence[Observation]) -> None:
        """Account for each of ``observations``: :meth:`add_columns` of them."""
        self.add_columns(ObservationColumns.of(observations))

    def add_columns(self, columns: ObservationColumns) -> None:
        """Account for every observation of ``columns`` at once.

        What :meth:`add` row by row would give: the same counts, histograms and
        samples (the same priorities are drawn, in the same order), sketches
        within their accuracy, and a confidence sum rounded differently. Routers fold a
        flush's worth of requests so, for a tenth of the CPU.
        """
        count = len(columns)
        if not count:
            return
        status = columns.status
        self.requests += count
        for code, times in zip(*np.unique(status, return_counts=True), strict=True):
            self.statuses[int(code)] = self.statuses.get(int(code), 0) + int(times)
        self.errors += int(np.count_nonzero(status >= 500))
        self.client_errors += int(np.count_nonzero((status >= 400) & (status < 500)))
        self.shadow_requests += int(np.count_nonzero(columns.shadow))
        answered = status < 400
        _add_latencies(self.latency, columns.latency_ms[answered])
        _add_latencies(self.model_latency, columns.model_ms[answered])
        first, last = float(columns.ts.min()), float(columns.ts.max())
        self.first_ts = first if self.first_ts is None else min(self.first_ts, first)
        self.last_ts = last if self.last_ts is None else max(self.last_ts, last)
        # One priority a request, as add() draws, shared by its two samples.
        draw = self._rng.random
        priorities = np.array([draw() for _ in range(count)])
        self._add_predictions(columns.prediction, priorities)
        confidence = columns.confidence[np.isfinite(columns.confidence)]
        if confidence.size:
            bins = (np.clip(confidence, 0.0, 1.0) * CONFIDENCE_BINS).astype(np.int64)
            counts = np.bincount(
                np.minimum(bins, CONFIDENCE_BINS - 1), minlength=CONFIDENCE_BINS
            )
            self.confidence_bins = [
                a + int(b) for a, b in zip(self.confidence_bins, counts, strict=True)
            ]
            self.confidence_sum += float(confidence.sum())
        rows = [i for i, row in enumerate(columns.features) if row is not None]
        if rows:
            features = columns.features
            self.features.add_many(
                priorities[rows],
                lambda i: np.asarray(features[rows[i]], dtype=np.float32),
            )

    def _add_predictions(self, predictions: np.ndarray, priorities: np.ndarray) -> None:
        finite = np.isfinite(predictions)
        values, priorities = predictions[finite], priorities[finite]
        if not values.size:
            return
        self.predictions.add_many(priorities, values.tolist().__getitem__)
        whole = values == np.floor(values)
        self.fractional_predictions += int(np.count_nonzero(~whole))
        # Counted in order of first appearance, so the classes past max_classes
        # are the ones add() would turn away; Python ints, as add() keeps them,
        # since a whole float may not fit in 64 bits.
        for label, times in Counter(int(v) for v in values[whole].tolist()).items():
            if label in self.classes or len(self.classes) < self.max_classes:
                self.classes[label] = self.classes.get(label, 0) + times
            else:
                self.other_classes += times

    def merge(self, other: VersionStats) -> None:
        """Add everything ``other`` holds to this (``other`` is unchanged)."""
        self.requests += other.requests
        self.errors += other.errors
        self.client_errors += other.client_errors
        self.shadow_requests += other.shadow_requests
        for status, count in other.statuses.items():
            self.statuses[status] = self.statuses.get(status, 0) + count
        self.latency.merge(other.latency)
        self.model_latency.merge(other.model_latency)
        for label, count in other.classes.items():
            if label in self.classes or len(self.classes) < self.max_classes:
                self.classes[label] = self.classes.get(label, 0) + count
            else:
                self.other_classes += count
        self.other_classes += other.other_classes
        self.fractional_predictions += other.fractional_predictions
        self.confidence_bins = [
            a + b
            for a, b in zip(self.confidence_bins, other.confidence_bins, strict=True)
        ]
        self.confidence_sum += other.confidence_sum
        self.features.merge(other.features)
        self.predictions.merge(other.predictions)
        for ts in (other.first_ts, other.last_ts):
            if ts is not None:
                self.first_ts = ts if self.first_ts is None else min(self.first_ts, ts)
                self.last_ts = ts if self.last_ts is None else max(self.last_ts, ts)

    def empty_like(self, seed: int = 0) -> VersionStats:
        """A new, empty accumulator with the same settings."""
        return VersionStats(
            sample_size=self.sample_size,
            max_classes=self.max_classes,
            relative_accuracy=self.relative_accuracy,
            seed=seed,
        )

    def drop_samples(self) -> None:
        """Forget the sampled features and predictions, keeping every count."""
        self.features.clear()
        self.predictions.clear()

    @property
    def error_rate(self) -> float | None:
        """5xx per request; ``None`` before any request."""
        return self.errors / self.requests if self.requests else None

    @property
    def confidence_count(self) -> int:
        """How many observations carried a confidence."""
        return sum(self.confidence_bins)

    @property
    def mean_confidence(self) -> float | None:
        """The mean top-class probability; ``None`` when none was recorded."""
        count = self.confidence_count
        return self.confidence_sum / count if count else None

    @property
    def categorical(self) -> bool:
        """Whether predictions look like class ids: all whole numbers."""
        return self.fractional_predictions == 0

    def feature_columns(self) -> dict[str, np.ndarray]:
        """The sampled feature vectors as columns ``f0, f1, ...`` (float64).

        Vectors shorter than the longest seen leave NaN in the columns they lack.
        """
        rows = list(self.features)
        if not rows:
            return {}
        width = max(row.size for row in rows)
        table = np.full((len(rows), width), np.nan)
        for index, row in enumerate(rows):
            table[index, : row.size] = row
        return {f"f{i}": table[:, i] for i in range(width)}

    def prediction_values(self) -> np.ndarray:
        """The sampled predictions, float64."""
        return np.fromiter(self.predictions, dtype=np.float64)

    def summary(self) -> VersionSummary:
        """The headline numbers."""
        return VersionSummary(
            requests=self.requests,
            errors=self.errors,
            client_errors=self.client_errors,
            error_rate=self.error_rate,
            p50_ms=self.latency.quantile(0.5),
            p99_ms=self.latency.quantile(0.99),
            model_p50_ms=self.model_latency.quantile(0.5),
            model_p99_ms=self.model_latency.quantile(0.99),
            mean_confidence=self.mean_confidence,
            shadow_requests=self.shadow_requests,
        )


def _add_latency(sketch: LatencySketch, value: float) -> None:
    # A clock step can make a latency negative or NaN; drop it rather than fail
    # the whole batch of observations it came in.
    if math.isfinite(value) and value >= 0:
        sketch.add(value)


def _add_latencies(sketch: LatencySketch, values: np.ndarray) -> None:
    # As _add_latency, for a whole column.
    sketch.add_many(values[np.isfinite(values) & (values >= 0)])


@dataclass(frozen=True)
class BucketPoint:
    """One time bucket of a dashboard series; latencies ``None`` when empty."""

    start: float
    requests: int
    errors: int
    client_errors: int
    error_rate: float | None
    p50_ms: float | None
    p99_ms: float | None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dict of the point."""
        return {
            "start": self.start,
            "requests": self.requests,
            "errors": self.errors,
            "client_errors": self.client_errors,
            "error_rate": json_float(self.error_rate),
            "p50_ms": json_float(self.p50_ms),
            "p99_ms": json_float(self.p99_ms),
        }


class WindowedStats:
    """One version's :class:`VersionStats` per time bucket, for a bounded horizon.

    Time is the observations' own ``ts``: the newest bucket seen is "now" for
    eviction, so buckets older than ``horizon_s`` before it are dropped, and an
    observation older than that is dropped on arrival and counted in
    ``dropped_late``. Feature and prediction samples are kept only in buckets
    within ``sample_horizon_s`` of the newest; queries over longer windows sample
    from that recent part.

    Queries take ``now`` from the caller (an injectable clock) and are aligned to
    buckets: a window includes every bucket it touches.
    """

    def __init__(
        self,
        *,
        bucket_s: float = 10.0,
        horizon_s: float = 3600.0,
        sample_horizon_s: float = 600.0,
        sample_size: int = 500,
        max_classes: int = 1000,
        relative_accuracy: float = 0.01,
        seed: int = 0,
    ) -> None:
        if bucket_s <= 0 or horizon_s < bucket_s or sample_horizon_s < 0:
            raise ValueError(
                "need bucket_s > 0, horizon_s >= bucket_s and sample_horizon_s >= 0: "
                f"{bucket_s}, {horizon_s}, {sample_horizon_s}"
            )
        self.bucket_s = bucket_s
        self.horizon_s = horizon_s
        self.sample_horizon_s = sample_horizon_s
        self.seed = seed
        self._template = VersionStats(
            sample_size=sample_size,
            max_classes=max_classes,
            relative_accuracy=relative_accuracy,
        )
        self._buckets: dict[int, VersionStats] = {}
        self._sampled: set[int] = set()
        self._newest: int | None = None
        self.dropped_late = 0

    @property
    def max_buckets(self) -> int:
        """How many buckets are kept at most."""
        return math.ceil(self.horizon_s / self.bucket_s)

    @property
    def bucket_count(self) -> int:
        """How many buckets are held now."""
        return len(self._buckets)

    def _index(self, ts: float) -> int:
        return math.floor(ts / self.bucket_s)

    def _bucket(self, index: int) -> VersionStats:
        bucket = self._buckets.get(index)
        if bucket is None:
            # Each bucket draws its own sample priorities: shared seeds would
            # correlate buckets and bias their merged sample.
            bucket = self._template.empty_like(seed=hash((self.seed, index)))
            self._buckets[index] = bucket
            self._sampled.add(index)
        return bucket

    def add(self, observation: Observation) -> None:
        """Account for one observation in its time bucket."""
        index = self._index(observation.ts)
        if self._newest is not None and index <= self._newest - self.max_buckets:
            self.dropped_late += 1
            return
        if self._newest is None or index > self._newest:
            self._newest = index
            self._evict()
        self._bucket(index).add(observation)

    def add_many(self, observations: Sequence[Observation]) -> None:
        """Account for each of ``observations``: :meth:`add_columns` of them."""
        self.add_columns(ObservationColumns.of(observations))

    def add_columns(self, columns: ObservationColumns) -> None:
        """Account for every observation of ``columns`` in its time bucket, as
        :meth:`add` would in their order: the same ones dropped late, each
        bucket's statistics as :meth:`VersionStats.add_columns` gives them.
        A row whose time is not finite fits no bucket: it is dropped and
        counted in ``dropped_late`` (where :meth:`add` would raise).
        """
        timed = np.isfinite(columns.ts)
        if not timed.all():
            self.dropped_late += int(np.count_nonzero(~timed))
            columns = columns.where(timed)
        if not len(columns):
            return
        indices = np.floor(columns.ts / self.bucket_s).astype(np.int64)
        # The newest bucket seen before each row, against which it is late.
        start = indices[0] if self._newest is None else self._newest
        before = np.maximum.accumulate(np.concatenate(([start], indices)))[:-1]
        late = indices <= before - self.max_buckets
        self.dropped_late += int(np.count_nonzero(late))
        advanced = self._newest is None or int(indices.max()) > self._newest
        self._newest = max(int(before[-1]), int(indices[-1]))
        # Rows of buckets that the newest pushes out of the horizon would be
        # added, then evicted: leave them out.
        keep = ~late & (indices > self._newest - self.max_buckets)
        for index in np.unique(indices[keep]).tolist():
            self._bucket(index).add_columns(columns.where(keep & (indices == index)))
        if advanced:
            self._evict()

    def _evict(self) -> None:
        assert self._newest is not None
        oldest = self._newest - self.max_buckets + 1
        for index in [i for i in self._buckets if i < oldest]:
            del self._buckets[index]
        oldest_sampled = self._newest - math.ceil(self.sample_horizon_s / self.bucket_s)
        for index in [i for i in self._sampled if i <= oldest_sampled]:
            self._sampled.discard(index)
            if index in self._buckets:
                self._buckets[index].drop_samples()

    def _indices(self, last_s: float, now: float) -> range:
        return range(self._index(now - last_s), self._index(now) + 1)

    def window(self, last_s: float, now: float) -> VersionStats:
        """Everything seen in the buckets touching ``[now - last_s, now]``, merged."""
        merged = self._template.empty_like(seed=self.seed)
        for index in self._indices(last_s, now):
            bucket = self._buckets.get(index)
            if bucket is not None:
                merged.merge(bucket)
        return merged

    def series(self, last_s: float, now: float) -> list[BucketPoint]:
        """One point per bucket touching ``[now - last_s, now]``, oldest first,
        empty buckets included so the time axis is regular."""
        points = []
        for index in self._indices(last_s, now):
            bucket = self._buckets.get(index) or self._template
            points.append(
                BucketPoint(
                    start=index * self.bucket_s,
                    requests=bucket.requests,
                    errors=bucket.errors,
                    client_errors=bucket.client_errors,
                    error_rate=bucket.error_rate,
                    p50_ms=bucket.latency.quantile(0.5),
                    p99_ms=bucket.latency.quantile(0.99),
                )
            )
        return points

    def __getstate__(self) -> dict[str, Any]:
        # The template is empty, and rebuilt from its settings: one empty
        # VersionStats less in every summary a router sends.
        state = self.__dict__.copy()
        template: VersionStats = state.pop("_template")
        state["_template_settings"] = (
            template.sample_size,
            template.max_classes,
            template.relative_accuracy,
        )
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        sample_size, max_classes, relative_accuracy = state.pop("_template_settings")
        self.__dict__.update(state)
        self._template = VersionStats(
            sample_size=sample_size,
            max_classes=max_classes,
            relative_accuracy=relative_accuracy,
        )

    def merge(self, other: WindowedStats) -> None:
        """Add ``other``'s buckets to this one's (same bucket width required);
        those past this one's horizon count in ``dropped_late``, as late
        observations do."""
        if other.bucket_s != self.bucket_s:
            raise ValueError(
                f"cannot merge buckets of {other.bucket_s} s into {self.bucket_s} s"
            )
        self.dropped_late += other.dropped_late
        for index, bucket in sorted(other._buckets.items()):
            if self._newest is not None and index <= self._newest - self.max_buckets:
                self.dropped_late += bucket.requests
                continue
            if self._newest is None or index > self._newest:
                self._newest = index
            self._bucket(index).merge(bucket)
        self._evict()
