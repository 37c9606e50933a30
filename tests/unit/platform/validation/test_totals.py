from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from rayfleet.platform.validation.observation import Observation
from rayfleet.platform.validation.totals import LATENCY_BUCKETS_MS, Totals

_LATENCIES = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(LATENCY_BUCKETS_MS),  # exactly on a bound: it belongs below
)


def _request(latency: float, status: int = 200) -> Observation:
    return Observation("m", "v1", 0.0, latency, 0.0, status)


@given(_LATENCIES)
def test_a_latency_lands_in_the_bucket_numpy_would_sort_it_into(latency: float) -> None:
    totals = Totals()
    totals.add(_request(latency))
    index = int(np.searchsorted(LATENCY_BUCKETS_MS, latency, side="left"))
    assert totals.latency_buckets == [
        int(i == index) for i in range(len(LATENCY_BUCKETS_MS) + 1)
    ]


@given(
    st.lists(st.tuples(st.floats(0, 1e5), st.sampled_from((200, 404, 503)))),
    st.integers(min_value=0, max_value=20),
)
def test_merged_totals_count_as_if_added_to_one(
    requests: list[tuple[float, int]], cut: int
) -> None:
    whole, first, second = Totals(), Totals(), Totals()
    for index, (latency, status) in enumerate(requests):
        whole.add(_request(latency, status))
        (first if index < cut else second).add(_request(latency, status))
    first.merge(second)
    assert first.by_status == whole.by_status
    assert first.latency_buckets == whole.latency_buckets
    assert first.latency_count == whole.latency_count == len(requests)
    assert np.isclose(first.latency_sum_ms, whole.latency_sum_ms)
