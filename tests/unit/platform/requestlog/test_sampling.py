"""Which request ids the log keeps: decided by the id alone."""

from __future__ import annotations

import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rayfleet.platform.requestlog.sampling import Sampler, id_hash


@given(st.text(max_size=200), st.floats(min_value=0, max_value=1))
def test_an_id_gets_the_same_answer_from_every_sampler(
    request_id: str, rate: float
) -> None:
    assert Sampler(rate)(request_id) == Sampler(rate)(request_id)


@given(
    st.text(max_size=64),
    st.floats(min_value=0, max_value=1),
    st.floats(min_value=0, max_value=1),
)
def test_an_id_kept_at_one_rate_is_kept_at_every_higher_rate(
    request_id: str, low: float, high: float
) -> None:
    low, high = sorted((low, high))
    if Sampler(low)(request_id):
        assert Sampler(high)(request_id)


def test_rates_zero_and_one_keep_none_and_all() -> None:
    ids = [uuid.uuid4().hex for _ in range(200)]
    assert not any(Sampler(0.0)(i) for i in ids)
    assert all(Sampler(1.0)(i) for i in ids)


@pytest.mark.parametrize("rate", [0.01, 0.1, 0.5])
def test_the_share_kept_is_the_rate(rate: float) -> None:
    ids = [f"req-{n}" for n in range(40_000)]  # similar ids, as clients make them
    kept = sum(Sampler(rate)(i) for i in ids)
    # Five binomial standard deviations: a failure here is not chance.
    sd = (len(ids) * rate * (1 - rate)) ** 0.5
    assert abs(kept - rate * len(ids)) < 5 * sd


def test_a_rate_outside_zero_to_one_is_refused() -> None:
    with pytest.raises(ValueError, match="rate"):
        Sampler(1.5)


def test_the_hash_is_fixed_across_processes_and_releases() -> None:
    # Routers on other machines, and next year's, must choose the same requests.
    assert [id_hash(i) for i in ("", "req-1", "req-2")] == [0, 3708133765, 3435558710]


@pytest.mark.parametrize("rate", [0.1, 0.5])
def test_random_ids_are_kept_at_the_rate_too(rate: float) -> None:
    ids = [uuid.uuid4().hex for _ in range(20_000)]
    kept = sum(Sampler(rate)(i) for i in ids)
    sd = (len(ids) * rate * (1 - rate)) ** 0.5
    assert abs(kept - rate * len(ids)) < 5 * sd
