"""Ratios over interleaved rounds: their median, and how far to trust it.

A benchmark that alternates two targets in short rounds gets one ratio a round,
and reads their median. On a noisy machine one run's median can land far from
the next run's (loadtest/RESULTS.md, "The last two targets, again": 0.79x and
1.01x minutes apart), so the tables also give a distribution-free interval: two
of the rounds' ratios, chosen by order statistics, that hold the median of the
ratio a round measures with at least ``MEDIAN_CONFIDENCE``. The ranks come from
the rollout gates' own bounds (:mod:`rayfleet.platform.rollout.quantile_bounds`).
Eight rounds give the 2nd and 7th smallest ratios (93%); fewer than five give
none. The rounds must be alike and independent, which interleaving serves:
drift over the run hits both targets of a round.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence

from rayfleet.platform.rollout.quantile_bounds import lower_rank, upper_rank

__all__ = ["MEDIAN_CONFIDENCE", "median_interval", "ratio_cell"]

# Two-sided: each bound holds at (1 + MEDIAN_CONFIDENCE) / 2.
MEDIAN_CONFIDENCE = 0.9


def median_interval(
    ratios: Sequence[float], confidence: float = MEDIAN_CONFIDENCE
) -> tuple[float, float] | None:
    """Two of ``ratios`` that hold their distribution's median at ``confidence``
    at least, or ``None`` when there are too few to say."""
    ordered = sorted(ratios)
    one_side = (1 + confidence) / 2
    low = lower_rank(len(ordered), 0.5, one_side)
    high = upper_rank(len(ordered), 0.5, one_side)
    if low is None or high is None:
        return None
    return ordered[low - 1], ordered[high - 1]


def ratio_cell(ratios: Sequence[float]) -> str:
    """``**median**x [interval]``, the interval left out when there is none;
    ``nan`` without ratios."""
    if not ratios:
        return "**nanx**"
    cell = f"**{statistics.median(ratios):.2f}x**"
    interval = median_interval(ratios)
    if interval is not None:
        cell += f" [{interval[0]:.2f}, {interval[1]:.2f}]"
    return cell
