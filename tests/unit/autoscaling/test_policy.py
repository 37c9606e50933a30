from __future__ import annotations

import math
import random
import re
from collections.abc import Callable, Iterable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from rayfleet.autoscaling.policy import PolicyState, RequestCountPolicy, decide

Demand = Callable[[float], float]

# One request in flight per replica keeps the arithmetic in the expectations below
# easy to follow by hand; the defaults are Knative's windows and rates.
POLICY = RequestCountPolicy(target_ongoing_requests=1, max_replicas=64)


def per_second(level: Callable[[int], float]) -> Demand:
    """Demand that changes only at whole seconds.

    A sample at ``t`` reports the second that ends at or after ``t``, the way a
    metric averaged over the interval up to ``t`` would, so any set of ticks that
    includes the whole seconds sees the same traffic.
    """
    return lambda t: level(math.ceil(t - 1e-9))


def run(
    demand: Demand,
    ticks: Iterable[float],
    policy: RequestCountPolicy = POLICY,
    replicas: int = 1,
) -> dict[float, int]:
    """Replicas decided at each tick, feeding each decision back as current."""
    state = PolicyState()
    decided = {}
    for now in ticks:
        replicas, state = decide(now, demand(now), replicas, state, policy)
        decided[now] = replicas
    return decided


def changes(decided: dict[float, int]) -> list[tuple[float, int]]:
    """``(time, replicas)`` at the first tick and at every change after it."""
    out: list[tuple[float, int]] = []
    for now, replicas in decided.items():
        if not out or out[-1][1] != replicas:
            out.append((now, replicas))
    return out


def irregular_ticks(seconds: int, seed: int = 0) -> list[float]:
    """Every whole second plus zero to three random instants inside each one."""
    rng = random.Random(seed)
    ticks = set()
    for second in range(seconds):
        ticks.add(float(second))
        ticks.update(second + rng.random() for _ in range(rng.randint(0, 3)))
    return sorted(ticks)


STEP = per_second(lambda s: 1.0 if s < 60 else 32.0)
SPIKE = per_second(lambda s: 32.0 if 60 <= s < 63 else 1.0)
DROP_TO_ZERO = per_second(lambda s: 4.0 if s < 60 else 0.0)
RAMP = per_second(lambda s: 1.0 + min(10, s // 10))

STEP_CHANGES = [(0, 1), (60, 7), (61, 12), (62, 17), (63, 22), (64, 27), (65, 32)]
# Panic holds 17 for the stable window after it began (to 120), the recommendation
# falls with the stable mean, and 30 s later the count follows it down at most
# halving every 2 s.
SPIKE_CHANGES = [
    *[(0, 1), (60, 7), (61, 12), (62, 17)],
    *[(150, 8), (152, 4), (154, 2), (156, 1)],
]
# The stable mean falls 4 -> 0 over the minute after the drop; each lower count is
# recommended once it suffices (at 74, 89, 104) and taken 30 s later.
ZERO_TO_MIN_CHANGES = [(0, 4), (104, 3), (119, 2), (134, 1)]


def test_step_up_panics_to_the_new_level_within_seconds() -> None:
    # The panic window's mean climbs by 31/6 a second: 37/6 -> 7, 68/6 -> 12, ...
    assert changes(run(STEP, range(200))) == STEP_CHANGES


def test_spike_scales_up_at_once_and_not_down_right_after() -> None:
    decided = run(SPIKE, range(200))
    assert changes(decided) == SPIKE_CHANGES
    assert decided[63] == decided[149] == 17


def test_ramp_follows_each_step_while_panicking_then_the_stable_mean() -> None:
    decided = run(RAMP, range(250))
    # 1 -> 2 doubles one replica's load: panic until 70, following each new level
    # as its first second arrives. Then the minute's mean, about 30 s behind, once
    # it is more than 10% over what the replicas carry: at 101 it is 462/60 = 7.7,
    # exactly 1.1 x 7, at 102 it is 7.8. The last level, 11, is 1.1 x 10: in band.
    assert changes(decided) == [
        (0, 1),
        (10, 2),
        (20, 3),
        (30, 4),
        (40, 5),
        (50, 6),
        (60, 7),
        (102, 8),
        (113, 9),
        (128, 10),
    ]
    counts = list(decided.values())
    assert counts == sorted(counts)


def test_noise_around_a_steady_level_changes_the_count_at_most_once() -> None:
    rng = random.Random(7)
    noise = {s: rng.uniform(-2.5, 2.5) for s in range(601)}
    noisy = per_second(lambda s: 10.0 + noise[s])
    for start in (8, 10, 12):
        decided = run(noisy, range(601), replicas=start)
        assert len(changes(decided)) <= 2
    # From 8 (25% short) the first second's noisy level already asks for more.
    assert changes(run(noisy, range(601), replicas=8)) == [(0, 10)]


def test_level_on_a_replica_boundary_does_not_flap() -> None:
    # 15.6 and 16.4 for 20 s each: the stable mean crosses 16.0 again and again,
    # so ceil(mean) alternates 16, 17, 16, ...; the 10% band holds 16 throughout.
    level = per_second(lambda s: 16.0 + (0.4 if (s // 20) % 2 else -0.4))
    assert changes(run(level, range(900), replicas=16)) == [(0, 16)]


def test_zero_traffic_goes_to_min_replicas() -> None:
    decided = run(DROP_TO_ZERO, range(400), replicas=4)
    assert changes(decided) == ZERO_TO_MIN_CHANGES


def test_zero_traffic_goes_to_zero_only_when_allowed_and_after_the_grace() -> None:
    policy = POLICY.model_copy(update={"allow_zero": True})
    decided = run(DROP_TO_ZERO, range(400), policy, replicas=4)
    # Idle since 59 (the last busy second): 60 s stable window + 30 s grace.
    assert changes(decided) == [*ZERO_TO_MIN_CHANGES, (149, 0)]


def test_no_traffic_from_the_start_keeps_initial_replicas_for_the_delay() -> None:
    decided = run(lambda t: 0.0, range(100), replicas=5)
    assert changes(decided) == [(0, 5), (30, 2), (32, 1)]


def test_bounds_hold_against_any_demand() -> None:
    policy = RequestCountPolicy(
        target_ongoing_requests=1, min_replicas=2, max_replicas=5
    )
    assert changes(run(STEP, range(200), policy, replicas=2)) == [(0, 2), (60, 5)]
    assert changes(run(lambda t: 0.0, range(200), policy, replicas=5)) == [
        (0, 5),
        (30, 2),
    ]


def test_scale_up_rate_limits_growth_per_period() -> None:
    policy = POLICY.model_copy(update={"max_scale_up_rate": 2.0})
    # Each 2 s period may double the least count in effect during it.
    assert changes(run(STEP, range(80), policy)) == [
        (0, 1),
        (60, 2),
        (62, 4),
        (64, 8),
        (66, 16),
        (68, 32),
    ]


@pytest.mark.parametrize(
    ("demand", "replicas", "expected"),
    [(STEP, 1, STEP_CHANGES), (SPIKE, 1, SPIKE_CHANGES)],
    ids=["step", "spike"],
)
def test_irregular_ticks_decide_the_same_at_whole_seconds(
    demand: Demand, replicas: int, expected: list[tuple[int, int]]
) -> None:
    regular = run(demand, range(200), replicas=replicas)
    irregular = run(demand, irregular_ticks(200), replicas=replicas)
    assert {t: irregular[float(t)] for t in range(200)} == regular
    assert changes(regular) == expected


def test_delays_are_seconds_whatever_the_tick_rate() -> None:
    # Serve decides about ten times a second; a slow controller, every two.
    policy = POLICY.model_copy(update={"allow_zero": True})
    for step_s in (0.1, 2.0):
        ticks = [i * step_s for i in range(round(400 / step_s))]
        decided = run(DROP_TO_ZERO, ticks, policy, replicas=4)
        times = [when for when, _ in changes(decided)[1:]]
        # Two-second samples blur the drop at 59 into (58, 60]: a tick early.
        expected = [104, 119, 134, 149]
        assert all(abs(t - e) <= step_s for t, e in zip(times, expected, strict=True))


def test_panic_mode_is_recorded_and_ends_a_stable_window_after_the_trigger() -> None:
    state = PolicyState()
    replicas = 1
    for now in range(61):
        replicas, state = decide(float(now), STEP(now), replicas, state, POLICY)
    assert state.panicking(60.0)
    assert state.panic_until == 120.0
    assert not state.panicking(120.0)
    assert state.last_decision == 7
    assert state.last_change_at == 60.0


def test_state_round_trips_through_json_types() -> None:
    state = PolicyState()
    replicas = 1
    for now in range(70):
        replicas, state = decide(float(now), SPIKE(now), replicas, state, POLICY)
    assert PolicyState.from_dict(state.to_dict()) == state
    assert PolicyState.from_dict({}) == PolicyState()


def test_history_is_pruned_to_the_windows() -> None:
    state = PolicyState()
    replicas = 1
    for tenth in range(3000):
        now = tenth / 10
        replicas, state = decide(now, 5.0, replicas, state, POLICY)
    assert len(state.demand) <= 602
    assert len(state.recommendations) <= 2
    assert len(state.decisions) <= 2


def test_a_clock_stepping_back_starts_afresh() -> None:
    replicas, state = decide(100.0, 8.0, 1, PolicyState(), POLICY)
    replicas, state = decide(50.0, 0.0, replicas, state, POLICY)
    assert state.demand == ((50.0, 0.0),)


@pytest.mark.parametrize("demand", [-1.0, math.nan, math.inf])
def test_demand_must_be_a_finite_count(demand: float) -> None:
    with pytest.raises(ValueError, match="demand"):
        decide(0.0, demand, 1, PolicyState(), POLICY)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"min_replicas": 3, "max_replicas": 2}, "min_replicas (3) must not exceed"),
        ({"panic_window_s": 90.0}, "panic_window_s (90.0) must not exceed"),
        ({"panic_threshold": 1.0}, "greater than 1"),
        ({"target_ongoing_requests": 0}, "greater than 0"),
        ({"stable_window": 60}, "Extra inputs are not permitted"),
    ],
)
def test_policy_rejects_bad_settings(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=re.escape(message)):
        RequestCountPolicy(**fields)


policies = st.builds(
    RequestCountPolicy,
    target_ongoing_requests=st.floats(0.5, 16),
    min_replicas=st.integers(1, 3),
    max_replicas=st.integers(3, 40),
    allow_zero=st.booleans(),
    stable_window_s=st.floats(10, 60),
    panic_window_s=st.floats(1, 10),
    max_scale_up_rate=st.floats(1.5, 1000),
    max_scale_down_rate=st.floats(1.5, 4),
    scale_down_delay_s=st.floats(0, 30),
    scale_to_zero_grace_s=st.floats(0, 30),
)
traffic = st.lists(
    st.tuples(st.floats(0.05, 3.0), st.floats(0, 200)), min_size=1, max_size=150
)


@settings(max_examples=200, deadline=None)
@given(policy=policies, steps=traffic, start=st.integers(0, 40))
def test_properties_bounds_and_no_scale_down_while_panicking(
    policy: RequestCountPolicy, steps: list[tuple[float, float]], start: int
) -> None:
    state = PolicyState()
    replicas = min(max(start, policy.min_replicas), policy.max_replicas)
    now = 1000.0
    for gap, demand in steps:
        now += gap
        previous = replicas
        replicas, state = decide(now, demand, previous, state, policy)
        lowest = 0 if policy.allow_zero else policy.min_replicas
        assert lowest <= replicas <= policy.max_replicas
        if state.panicking(now):
            assert replicas >= previous


@settings(max_examples=50, deadline=None)
@given(
    policy=policies,
    before=traffic,
    level=st.floats(0, 200),
    gap=st.floats(0.25, 2.0),
)
def test_property_steady_demand_settles_to_a_constant_count(
    policy: RequestCountPolicy,
    before: list[tuple[float, float]],
    level: float,
    gap: float,
) -> None:
    state = PolicyState()
    replicas = policy.min_replicas
    now = 0.0
    for step, demand in before:
        now += step
        replicas, state = decide(now, demand, replicas, state, policy)
    # Long enough for the windows to hold only the steady level, the delay to
    # pass, the rates to walk down from max_replicas, and the zero grace to end.
    settle_s = (
        2 * policy.stable_window_s
        + policy.scale_down_delay_s
        + policy.scale_to_zero_grace_s
        + 10 * policy.scale_rate_period_s
    )
    end = now + settle_s
    while now < end:
        now += gap
        replicas, state = decide(now, level, replicas, state, policy)
    settled = replicas
    for _ in range(round(120 / gap)):
        now += gap
        replicas, state = decide(now, level, replicas, state, policy)
        assert replicas == settled
    # A fixed point: the clamped need itself, or a count whose load is in band.
    target = policy.target_ongoing_requests
    lowest = policy.min_replicas if level > 0 or not policy.allow_zero else 0
    needed = min(max(math.ceil(level / target - 1e-9), lowest), policy.max_replicas)
    in_band = settled > 0 and abs(level / (target * settled) - 1) <= policy.tolerance
    assert settled == needed or in_band
