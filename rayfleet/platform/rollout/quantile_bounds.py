"""Distribution-free confidence bounds on a quantile, from order statistics.

For ``n`` independent draws of any distribution and its ``q``-quantile ``xi``,
the ``k``-th smallest draw ``X_(k)`` is at most ``xi`` unless fewer than ``k``
draws fall at or below ``xi``; that count is Binomial(n, F(xi)) with
``F(xi) >= q``, so::

    P(X_(k) <= xi) >= P(Binomial(n, q) >= k)        (X_(k) a lower bound)
    P(X_(m) >= xi) >= P(Binomial(n, q) <= m - 1)    (X_(m) an upper bound)

whatever the distribution, ties and heavy tails included. :func:`lower_rank`
and :func:`upper_rank` pick the tightest ranks for a confidence;
:func:`lower_bound` and :func:`upper_bound` read them from a
:class:`RankedSample` (a latency sketch, whose answers are intervals, is read
on the conservative side). The draws must be independent and alike: requests
of one window, not a time series whose level moves within it.

Pure Python: the rollout's gates read these, and the rollout imports no numpy.
"""

from __future__ import annotations

import math
from typing import Protocol

__all__ = [
    "RankedSample",
    "binomial_sf",
    "lower_bound",
    "lower_rank",
    "upper_bound",
    "upper_rank",
]


class RankedSample(Protocol):
    """Values whose ``rank``-th smallest can be read, as an interval.

    :class:`~rayfleet.platform.validation.sketch.LatencySketch` is one; a sorted
    list of exact values is another (its interval a single point).
    """

    @property
    def count(self) -> int:
        """How many values there are."""
        ...

    def rank_bounds(self, rank: int) -> tuple[float, float]:
        """Bounds on the ``rank``-th smallest value, ``1 <= rank <= count``."""
        ...


def _masses(n: int, p: float) -> tuple[int, list[float]]:
    """Binomial(n, p) probabilities of ``first, first + 1, ...``: all but a
    negligible tail.

    The window spans 12 standard deviations plus 30 either side of the mode; by
    Bernstein's inequality the mass outside it is below 1e-18, far under any
    ``1 - confidence`` a gate uses, while the window stays a few thousand terms
    even for a million draws. The terms come from the mode outwards by the
    ratio of neighbours, so none needs a factorial.
    """
    if not 0 < p < 1:
        raise ValueError(f"p must be in (0, 1): {p}")
    mode = min(n, math.floor((n + 1) * p))
    width = math.ceil(12 * math.sqrt(n * p * (1 - p)) + 30)
    first, last = max(0, mode - width), min(n, mode + width)
    log_mode = (
        math.lgamma(n + 1)
        - math.lgamma(mode + 1)
        - math.lgamma(n - mode + 1)
        + mode * math.log(p)
        + (n - mode) * math.log1p(-p)
    )
    odds = p / (1 - p)
    masses = [0.0] * (last - first + 1)
    masses[mode - first] = term = math.exp(log_mode)
    for j in range(mode, last):
        term *= (n - j) / (j + 1) * odds
        masses[j + 1 - first] = term
    term = masses[mode - first]
    for j in range(mode, first, -1):
        term *= j / (n - j + 1) / odds
        masses[j - 1 - first] = term
    return first, masses


def binomial_sf(k: int, n: int, p: float) -> float:
    """P(X >= k) for X ~ Binomial(n, p), ``0 < p < 1``.

    Absolute error about ``n * 1e-15`` (``lgamma``'s, scaled by n): 2e-9 at a
    million draws, far below the 1 - confidence the gates compare it with.
    """
    if k <= 0:
        return 1.0
    if k > n:
        return 0.0
    first, masses = _masses(n, p)
    return min(1.0, sum(masses[max(k - first, 0) :]))


# A sum of binomial terms that equals its target exactly (q = confidence = 0.703125
# at one draw) lands a rounding error either side of it: ties within this count as
# met, as exact arithmetic has them. Far below any risk a gate would state.
_TIE = 1e-12


def _check(n: int, q: float, confidence: float) -> None:
    if n < 0 or not 0 < q < 1 or not 0.5 < confidence < 1:
        raise ValueError(
            f"need n >= 0, 0 < q < 1 and 0.5 < confidence < 1: {n}, {q}, {confidence}"
        )


def lower_rank(n: int, q: float, confidence: float) -> int | None:
    """The largest ``k`` with ``P(Binomial(n, q) >= k) >= confidence``.

    ``X_(k)`` of ``n`` draws is then a lower bound of the ``q``-quantile at that
    confidence; ``None`` when no draw is (too few draws).
    """
    _check(n, q, confidence)
    if n == 0:
        return None
    first, masses = _masses(n, q)
    # k - 1 is the largest j with P(X <= j) <= 1 - confidence.
    best, below = first - 1, 0.0
    for offset, mass in enumerate(masses):
        below += mass
        if below > 1 - confidence + _TIE:
            break
        best = first + offset
    return best + 1 if best >= 0 else None


def upper_rank(n: int, q: float, confidence: float) -> int | None:
    """The smallest ``m`` with ``P(Binomial(n, q) <= m - 1) >= confidence``.

    ``X_(m)`` of ``n`` draws is then an upper bound of the ``q``-quantile at
    that confidence; ``None`` when ``m`` would exceed ``n`` (too few draws).
    """
    _check(n, q, confidence)
    if n == 0:
        return None
    first, masses = _masses(n, q)
    below = 0.0
    for offset, mass in enumerate(masses):
        below += mass
        if below >= confidence - _TIE:
            m = first + offset + 1
            return m if m <= n else None
    return None


def lower_bound(sample: RankedSample, q: float, confidence: float) -> float | None:
    """A value the ``q``-quantile is above at ``confidence``; ``None`` without one."""
    rank = lower_rank(sample.count, q, confidence)
    return None if rank is None else sample.rank_bounds(rank)[0]


def upper_bound(sample: RankedSample, q: float, confidence: float) -> float | None:
    """A value the ``q``-quantile is below at ``confidence``; ``None`` without one."""
    rank = upper_rank(sample.count, q, confidence)
    return None if rank is None else sample.rank_bounds(rank)[1]
