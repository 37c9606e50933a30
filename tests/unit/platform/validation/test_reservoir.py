from __future__ import annotations

import random

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from rayfleet.platform.validation.reservoir import Reservoir


def _filled(
    items: range, capacity: int, seed: int
) -> tuple[Reservoir[int], dict[int, float]]:
    rng = random.Random(seed)
    reservoir: Reservoir[int] = Reservoir(capacity)
    priorities = {}
    for item in items:
        priorities[item] = rng.random()
        reservoir.add(priorities[item], item)
    return reservoir, priorities


def test_keeps_the_smallest_priorities() -> None:
    reservoir, priorities = _filled(range(1000), 50, seed=1)
    expected = sorted(priorities, key=priorities.__getitem__)[:50]
    assert sorted(reservoir) == sorted(expected)
    assert reservoir.seen == 1000 and len(reservoir) == 50
    assert reservoir.threshold == max(priorities[i] for i in expected)


def test_merge_is_the_sample_of_both_streams() -> None:
    left, left_p = _filled(range(0, 700), 40, seed=2)
    right, right_p = _filled(range(700, 1000), 40, seed=3)
    left.merge(right)
    priorities = {**left_p, **right_p}
    assert sorted(left) == sorted(sorted(priorities, key=priorities.__getitem__)[:40])
    assert left.seen == 1000


def test_sample_is_uniform() -> None:
    # Each of 100 items lands in a 10-item sample with probability 0.1; over 2000
    # seeded runs each count is Binomial(2000, 0.1): mean 200, sd 13.4.
    hits = np.zeros(100)
    for seed in range(2000):
        reservoir, _ = _filled(range(100), 10, seed)
        hits[list(reservoir)] += 1
    assert hits.sum() == 20_000
    assert np.abs(hits - 200).max() < 5 * 13.4


def test_short_stream_is_kept_whole_and_clear_keeps_the_count() -> None:
    reservoir, _ = _filled(range(5), 10, seed=0)
    assert sorted(reservoir) == [0, 1, 2, 3, 4] and reservoir.threshold == float("inf")
    reservoir.clear()
    assert len(reservoir) == 0 and reservoir.seen == 5


def test_capacity_must_be_positive() -> None:
    with pytest.raises(ValueError, match="capacity"):
        Reservoir(0)


@given(
    st.integers(min_value=0, max_value=60),
    st.integers(min_value=0, max_value=60),
    st.integers(min_value=1, max_value=30),
    st.integers(min_value=0, max_value=2**16),
)
def test_merging_any_two_samples_keeps_the_smallest_priorities_of_both(
    left_size: int, right_size: int, capacity: int, seed: int
) -> None:
    left, left_p = _filled(range(left_size), capacity, seed)
    right, right_p = _filled(range(100, 100 + right_size), capacity, seed + 1)
    left.merge(right)
    priorities = {**left_p, **right_p}
    kept = sorted(priorities, key=priorities.__getitem__)[:capacity]
    assert sorted(left) == sorted(kept)
    assert left.seen == left_size + right_size
    full = len(kept) == capacity
    assert left.threshold == (
        max(priorities[i] for i in kept) if full else float("inf")
    )
    # Still a working sample: one more item below the threshold gets in.
    left.add(-1.0, -1)
    assert -1 in list(left)
