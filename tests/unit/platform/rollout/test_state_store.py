"""The StateStore contract, held by MemoryStateStore and by ModelStore on a folder.

The S3 side of ModelStore is in tests/unit/platform/config/test_store_s3.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rayfleet.platform.config.store import ModelStore
from rayfleet.platform.rollout.state_store import MemoryStateStore, StateStore


@pytest.fixture(params=["memory", "folder"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> StateStore:
    if request.param == "memory":
        return MemoryStateStore()
    return ModelStore(str(tmp_path / "store"))


def test_state_is_replaced_whole(store: StateStore) -> None:
    assert store.read_state("shop/digits") is None
    store.write_state("shop/digits", {"stable": "v1", "finished": {}})
    store.write_state("shop/digits", {"stable": "v2"})
    assert store.read_state("shop/digits") == {"stable": "v2"}


def test_history_reads_back_in_order_with_a_limit(store: StateStore) -> None:
    assert store.read_history("shop/digits", 10) == []
    for n in range(5):
        store.append_history("shop/digits", {"n": n})
    assert store.read_history("shop/digits", 10) == [{"n": n} for n in range(5)]
    assert store.read_history("shop/digits", 2) == [{"n": 3}, {"n": 4}]
    assert store.read_history("shop/digits", 1) == [{"n": 4}]


@pytest.mark.parametrize("limit", [1, 15, 16, 17, 50, 1000])
def test_a_long_history_reads_back_newest_last_with_a_limit(
    store: StateStore, limit: int
) -> None:
    # More entries than the store reads at once, so the order is kept across them.
    for n in range(50):
        store.append_history("shop/digits", {"n": n})
    expected = [{"n": n} for n in range(max(0, 50 - limit), 50)]
    assert store.read_history("shop/digits", limit) == expected


def test_history_survives_the_next_state_and_keeps_keys_apart(
    store: StateStore,
) -> None:
    store.append_history("shop/digits", {"n": 1})
    store.write_state("shop/digits", {"stable": "v2"})
    store.append_history("other/digits", {"n": 2})
    store.append_history("shop/iris", {"n": 3})
    assert store.read_history("shop/digits", 10) == [{"n": 1}]
    assert store.read_history("other/digits", 10) == [{"n": 2}]


def test_what_was_read_or_written_is_a_copy(store: StateStore) -> None:
    entry = {"gates": [{"name": "x"}]}
    store.append_history("shop/digits", entry)
    entry["gates"].append({"name": "y"})
    (read,) = store.read_history("shop/digits", 1)
    read["gates"].clear()
    assert store.read_history("shop/digits", 1) == [{"gates": [{"name": "x"}]}]


@pytest.mark.parametrize("limit", [0, -1])
def test_a_limit_below_one_is_refused(store: StateStore, limit: int) -> None:
    store.append_history("shop/digits", {"n": 1})
    with pytest.raises(ValueError, match="limit must be at least 1"):
        store.read_history("shop/digits", limit)


@settings(max_examples=40)
@given(count=st.integers(0, 30), limit=st.integers(1, 40))
def test_memory_history_is_the_last_entries_in_order(count: int, limit: int) -> None:
    store = MemoryStateStore()
    for n in range(count):
        store.append_history("k", {"n": n})
    expected = [{"n": n} for n in range(max(0, count - limit), count)]
    assert store.read_history("k", limit) == expected
