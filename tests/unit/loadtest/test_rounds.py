"""The rounds tables' median and the interval that holds it."""

from __future__ import annotations

import statistics

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from loadtest.rounds import median_interval, ratio_cell

RATIOS = st.lists(
    st.floats(min_value=0.01, max_value=100, allow_nan=False), max_size=40
)


def test_eight_rounds_give_the_second_and_seventh_smallest() -> None:
    ratios = [1.10, 0.80, 0.95, 1.30, 0.90, 1.00, 1.05, 0.70]
    assert median_interval(ratios) == (0.80, 1.10)
    assert ratio_cell(ratios) == "**0.97x** [0.80, 1.10]"


def test_five_rounds_give_their_range_and_four_give_none() -> None:
    assert median_interval([3.0, 1.0, 2.0, 5.0, 4.0]) == (1.0, 5.0)
    assert median_interval([1.0, 2.0, 3.0, 4.0]) is None
    assert ratio_cell([1.0, 2.0, 3.0, 4.0]) == "**2.50x**"
    assert ratio_cell([]) == "**nanx**"


@given(RATIOS)
def test_the_interval_holds_the_sample_median_and_ignores_order(
    ratios: list[float],
) -> None:
    interval = median_interval(ratios)
    if interval is None:
        assert len(ratios) < 5
        return
    low, high = interval
    assert low <= statistics.median(ratios) <= high
    assert median_interval(list(reversed(ratios))) == interval


def test_it_holds_the_true_median_at_least_as_often_as_it_says() -> None:
    # Eight rounds: [2nd, 7th smallest] covers the median with probability
    # 1 - 2 * 9/256 = 0.930, whatever the distribution.
    rng = np.random.default_rng(7)
    trials = 4000
    samples = rng.lognormal(0.0, 0.3, size=(trials, 8))  # median exactly 1
    held = 0
    for sample in samples:
        interval = median_interval(sample.tolist())
        assert interval is not None
        held += interval[0] <= 1.0 <= interval[1]
    assert 0.92 <= held / trials <= 0.94
