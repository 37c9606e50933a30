"""Latency samples for gate and state-machine tests: exact, noiseless or drawn.

:class:`ExactSample` is a :class:`RankedSample` whose order statistics are the
values themselves (no sketch error), for exact expectations; :func:`sketched`
puts values in the Validator's own sketch; :func:`grid` is a sample without
noise; :func:`heavy` draws from a heavy-tailed mixture; :func:`measured` makes
a window whose latencies (percentiles and samples) come from given values.
"""

from __future__ import annotations

from collections.abc import Iterable
from statistics import NormalDist
from typing import Any, Literal

import numpy as np

from rayfleet.platform.rollout import WindowComparison
from rayfleet.platform.rollout.quantile_bounds import RankedSample
from rayfleet.platform.validation.sketch import LatencySketch


class ExactSample:
    """Values whose ``rank``-th smallest is known exactly."""

    def __init__(self, values: Iterable[float]) -> None:
        self.values = sorted(float(v) for v in values)

    @property
    def count(self) -> int:
        return len(self.values)

    def rank_bounds(self, rank: int) -> tuple[float, float]:
        if not 1 <= rank <= len(self.values):
            raise ValueError(f"rank {rank} outside 1..{len(self.values)}")
        value = self.values[rank - 1]
        return value, value

    def quantile(self, q: float) -> float:
        """The sketch's convention: the value of rank floor(q (n - 1)) + 1."""
        return self.values[int(q * (len(self.values) - 1))]


def sketched(values: Iterable[float]) -> LatencySketch:
    """The values in a sketch, as the Validator keeps them."""
    sketch = LatencySketch()
    for value in values:
        sketch.add(float(value))
    return sketch


def grid(n: int, median: float, spread: float = 0.2) -> np.ndarray:
    """``n`` latencies at evenly spaced quantiles of a lognormal: no noise."""
    normal = NormalDist()
    z = np.array([normal.inv_cdf((i + 0.5) / n) for i in range(n)])
    values: np.ndarray = median * np.exp(spread * z)
    return values


def heavy(rng: np.random.Generator, n: int, scale: float = 1.0) -> np.ndarray:
    """Model times with a heavy tail: a lognormal body (median 2 ms) and 5% from
    a Pareto tail (shape 1.5, from 4 ms; infinite variance), times ``scale``.
    Stable's p50 is about 2 ms, its p99 about 11.6 ms."""
    body = rng.lognormal(np.log(2.0), 0.4, n)
    tail = 4.0 * (1 + rng.pareto(1.5, n))
    mixed: np.ndarray = np.where(rng.random(n) < 0.05, tail, body) * scale
    return mixed


def measured(
    canary: Iterable[float],
    stable: Iterable[float],
    timing: Literal["model", "end_to_end"] = "end_to_end",
    *,
    exact: bool = False,
    **changes: Any,
) -> WindowComparison:
    """A healthy window whose latencies are those of the values: end to end,
    and model time too when ``timing`` is ``"model"``.

    The percentiles and the samples both come from the values, as the
    Validator's come from its sketches (``exact``: from :class:`ExactSample`).
    """
    make = ExactSample if exact else sketched
    c, s = make(canary), make(stable)
    p50 = (c.quantile(0.5), s.quantile(0.5))
    p99 = (c.quantile(0.99), s.quantile(0.99))
    samples: tuple[RankedSample, RankedSample] = (c, s)
    latency: dict[str, Any] = {
        "canary_p50_ms": p50[0],
        "stable_p50_ms": p50[1],
        "canary_p99_ms": p99[0],
        "stable_p99_ms": p99[1],
        "canary_latency": samples[0],
        "stable_latency": samples[1],
    }
    if timing == "model":
        latency |= {
            "canary_model_p50_ms": p50[0],
            "stable_model_p50_ms": p50[1],
            "canary_model_p99_ms": p99[0],
            "stable_model_p99_ms": p99[1],
            "canary_model_latency": samples[0],
            "stable_model_latency": samples[1],
        }
    base = {
        "canary_requests": c.count,
        "stable_requests": s.count,
        "canary_error_rate": 0.0,
        "stable_error_rate": 0.0,
        "prediction_js": 0.02,
        "input_drift_share": 0.0,
    }
    return WindowComparison(**(base | latency | changes))
