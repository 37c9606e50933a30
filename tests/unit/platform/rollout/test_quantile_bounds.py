"""Order-statistic confidence bounds on quantiles, against brute force."""

from __future__ import annotations

import math
from math import comb

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rayfleet.platform.rollout.quantile_bounds import (
    binomial_sf,
    lower_bound,
    lower_rank,
    upper_bound,
    upper_rank,
)
from tests.unit.platform.rollout.latency_samples import ExactSample


def _cdf(j: int, n: int, q: float) -> float:
    """P(Binomial(n, q) <= j), term by term."""
    terms = range(min(j, n) + 1)  # P(X <= j) is 1 from j = n on
    return math.fsum(comb(n, i) * q**i * (1 - q) ** (n - i) for i in terms)


def _brute_lower(n: int, q: float, confidence: float) -> int | None:
    ranks = [k for k in range(1, n + 1) if 1 - _cdf(k - 1, n, q) >= confidence]
    return max(ranks, default=None)


def _brute_upper(n: int, q: float, confidence: float) -> int | None:
    ranks = [m for m in range(1, n + 1) if _cdf(m - 1, n, q) >= confidence]
    return min(ranks, default=None)


@pytest.mark.parametrize(
    ("n", "q", "confidence", "lower", "upper"),
    [
        # The gates' cases: 300 canary and 2000 stable requests, 99.5% each.
        (300, 0.99, 0.995, 292, None),
        (2000, 0.99, 0.995, 1968, 1991),
        (300, 0.5, 0.995, 128, 173),
        # Small n, by hand: P(all 5 above the median) = 1/32 > 1%, so no lower
        # bound at 99%; at 95% the smallest value is one (1 - 1/32 = 0.969).
        (5, 0.5, 0.99, None, None),
        (5, 0.5, 0.95, 1, 5),
        # One draw is below the p99 with probability 0.99: a lower bound at
        # 98.5%, none at 99.1%, and never an upper bound.
        (1, 0.99, 0.985, 1, None),
        (1, 0.99, 0.991, None, None),
        # An exact tie (P(X >= 1) = q = confidence) is met, whatever the rounding
        # of the terms: hypothesis found this one.
        (1, 0.703125, 0.703125, 1, None),
        (0, 0.5, 0.9, None, None),
    ],
)
def test_ranks_by_hand(
    n: int, q: float, confidence: float, lower: int | None, upper: int | None
) -> None:
    assert (lower_rank(n, q, confidence), upper_rank(n, q, confidence)) == (
        lower,
        upper,
    )
    if 0 < n <= 300:
        assert lower_rank(n, q, confidence) == _brute_lower(n, q, confidence)
        assert upper_rank(n, q, confidence) == _brute_upper(n, q, confidence)


@settings(max_examples=150, deadline=None)
@given(
    st.integers(1, 120),
    st.sampled_from([0.01, 0.1, 0.5, 0.9, 0.95, 0.99]) | st.floats(0.001, 0.999),
    st.sampled_from([0.9, 0.95, 0.99, 0.995]) | st.floats(0.51, 0.999),
)
def test_ranks_match_brute_force(n: int, q: float, confidence: float) -> None:
    lower, upper = lower_rank(n, q, confidence), upper_rank(n, q, confidence)
    assert lower == _brute_lower(n, q, confidence)
    assert upper == _brute_upper(n, q, confidence)
    if lower is not None and upper is not None:
        assert lower <= upper


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 150), st.integers(0, 151), st.floats(0.001, 0.999))
def test_binomial_sf_matches_brute_force(n: int, k: int, p: float) -> None:
    exact = 1 - _cdf(k - 1, n, p) if k > 0 else 1.0
    assert binomial_sf(k, n, p) == pytest.approx(exact, rel=1e-9, abs=1e-14)


def test_large_n_is_fast_and_sane() -> None:
    # A long window of a busy stable: a million requests, ranks near n q.
    k, m = lower_rank(10**6, 0.99, 0.995), upper_rank(10**6, 0.99, 0.995)
    assert k is not None and m is not None
    assert 990_000 - 300 < k < 990_000 < m < 990_000 + 300


@pytest.mark.parametrize("bad", [(-1, 0.5, 0.9), (5, 0.0, 0.9), (5, 0.5, 0.5)])
def test_nonsense_is_refused(bad: tuple[int, float, float]) -> None:
    with pytest.raises(ValueError, match="confidence"):
        lower_rank(*bad)


def test_bounds_cover_a_heavy_tailed_quantile_as_often_as_promised() -> None:
    # Pareto(1.5) from 1: the q-quantile is (1 - q) ** (-1 / 1.5). The bound
    # misses with probability at most 1 - confidence, whatever the tail.
    rng = np.random.default_rng(3)
    q, confidence, trials = 0.99, 0.95, 2000
    true = (1 - q) ** (-1 / 1.5)
    lower_misses = upper_misses = 0
    for _ in range(trials):
        sample = ExactSample(1 + rng.pareto(1.5, 600))
        low, high = (
            lower_bound(sample, q, confidence),
            upper_bound(sample, q, confidence),
        )
        assert low is not None and high is not None
        lower_misses += low > true
        upper_misses += high < true
    # 5% of 2000 is 100; three standard deviations above it is 129.
    assert lower_misses <= 129 and upper_misses <= 129
