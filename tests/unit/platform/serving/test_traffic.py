from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rayfleet.platform.errors import VersionNotFound
from rayfleet.platform.serving.traffic import TrafficPlan, sticky_point


def test_pin_wins_even_at_weight_zero() -> None:
    plan = TrafficPlan("m", {"canary": 0.0, "stable": 100.0})
    assert plan.choose(pin="canary", sticky_key="k") == "canary"


def test_unknown_pin_is_not_found() -> None:
    plan = TrafficPlan("m", {"stable": 100.0})
    with pytest.raises(VersionNotFound, match="no version 'v9'"):
        plan.choose(pin="v9")


def test_weighted_split_within_binomial_bounds() -> None:
    plan = TrafficPlan("m", {"canary": 10.0, "stable": 90.0})
    rng = random.Random(7)
    n = 20_000
    hits = sum(plan.choose(rand=rng.random) == "canary" for _ in range(n))
    # 99.9% two-sided binomial bound: 3.29 standard deviations.
    sigma = (n * 0.1 * 0.9) ** 0.5
    assert abs(hits - n * 0.1) < 3.29 * sigma


def test_sticky_point_is_stable_and_spread() -> None:
    assert sticky_point("session-1") == sticky_point("session-1")
    points = [sticky_point(f"s{i}") for i in range(10_000)]
    assert all(0 <= p < 100 for p in points)
    assert 45 < sum(p < 50 for p in points) / 100 < 55


@given(st.text(min_size=1), st.floats(0, 100), st.floats(0, 100))
def test_sticky_keys_on_the_canary_stay_as_it_grows(
    key: str, before: float, after: float
) -> None:
    low, high = sorted((before, after))
    small = TrafficPlan("m", {"canary": low, "stable": 100 - low or 1e-9})
    large = TrafficPlan("m", {"canary": high, "stable": 100 - high or 1e-9})
    if small.choose(sticky_key=key) == "canary":
        assert large.choose(sticky_key=key) == "canary"


@given(st.dictionaries(st.text(min_size=1, max_size=5), st.floats(0, 100), min_size=1))
def test_choice_is_always_a_version_with_weight(weights: dict[str, float]) -> None:
    if sum(weights.values()) <= 0:
        with pytest.raises(ValueError):
            TrafficPlan("m", weights)
        return
    plan = TrafficPlan("m", weights)
    for value in (0.0, 0.5, 0.999999):
        assert weights[plan.choose(rand=lambda v=value: v)] > 0
