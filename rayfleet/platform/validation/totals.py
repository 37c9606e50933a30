"""Monotonic request counts per version, for the Prometheus counters of ``/metrics``.

The rollout's windows forget old traffic; Prometheus wants counters that only grow
(a scraper computes rates from them), so the controller keeps both.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field

import numpy as np

from rayfleet.platform.validation.observation import Observation, ObservationColumns

__all__ = ["LATENCY_BUCKETS_MS", "Totals"]

# Prometheus histogram bounds for request latency, in milliseconds.
LATENCY_BUCKETS_MS = (1, 2.5, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000)


@dataclass
class Totals:
    """Counts of one version since the Validator started: by status and latency."""

    by_status: dict[int, int] = field(default_factory=dict)
    latency_buckets: list[int] = field(
        default_factory=lambda: [0] * (len(LATENCY_BUCKETS_MS) + 1)
    )
    latency_sum_ms: float = 0.0
    latency_count: int = 0

    def add(self, observation: Observation) -> None:
        """Count one request: its status, and its latency in its bucket."""
        self.by_status[observation.status] = (
            self.by_status.get(observation.status, 0) + 1
        )
        latency = observation.latency_ms
        # bisect, not numpy: routers count every request (5 us a call against
        # 0.3); NaN goes past the last bound, as numpy's sort order puts it.
        index = (
            bisect.bisect_left(LATENCY_BUCKETS_MS, latency)
            if latency == latency
            else len(LATENCY_BUCKETS_MS)
        )
        self.latency_buckets[index] += 1
        self.latency_sum_ms += latency
        self.latency_count += 1

    def add_columns(self, columns: ObservationColumns) -> None:
        """Count every request of ``columns``, as :meth:`add` would one by one
        (the latency sum rounded differently)."""
        if not len(columns):
            return
        for code, times in zip(
            *np.unique(columns.status, return_counts=True), strict=True
        ):
            self.by_status[int(code)] = self.by_status.get(int(code), 0) + int(times)
        latency = columns.latency_ms
        # searchsorted on the left is bisect_left, and puts NaN past the last
        # bound, as add() does.
        counts = np.bincount(
            np.searchsorted(LATENCY_BUCKETS_MS, latency, side="left"),
            minlength=len(self.latency_buckets),
        )
        self.latency_buckets = [
            a + int(b) for a, b in zip(self.latency_buckets, counts, strict=True)
        ]
        self.latency_sum_ms += float(latency.sum())
        self.latency_count += len(columns)

    def merge(self, other: Totals) -> None:
        """Add everything ``other`` counted to this (``other`` is unchanged)."""
        for status, count in other.by_status.items():
            self.by_status[status] = self.by_status.get(status, 0) + count
        self.latency_buckets = [
            a + b
            for a, b in zip(self.latency_buckets, other.latency_buckets, strict=True)
        ]
        self.latency_sum_ms += other.latency_sum_ms
        self.latency_count += other.latency_count

    @property
    def requests(self) -> int:
        """Every request counted, whatever its status."""
        return sum(self.by_status.values())
