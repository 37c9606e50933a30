"""Monotonic request counts per version, for the Prometheus counters of ``/metrics``.

The rollout's windows forget old traffic; Prometheus wants counters that only grow
(a scraper computes rates from them), so the controller keeps both.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from rayfleet.platform.validation.observation import Observation

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
        index = int(np.searchsorted(LATENCY_BUCKETS_MS, latency, side="left"))
        self.latency_buckets[index] += 1
        self.latency_sum_ms += latency
        self.latency_count += 1

    @property
    def requests(self) -> int:
        """Every request counted, whatever its status."""
        return sum(self.by_status.values())
