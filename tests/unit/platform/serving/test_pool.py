"""VersionPool: versions load on first request, once, and the pool never holds more
than its limits, unloading least recently used and idle versions."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rayfleet.platform.errors import ServiceUnavailable, http_status
from rayfleet.platform.serving.pool import (
    UNLOAD_REASONS,
    PoolLimits,
    PoolStats,
    VersionPool,
)


@dataclass
class Version:
    """What a load makes: which key, and which load of it (1 for the first)."""

    key: str
    generation: int
    alive: bool = True


@dataclass
class Store:
    """Loads versions of known sizes, checking the pool's limits at each load.

    ``gate``: when set, a load waits for it. ``fail``: keys whose next load raises.
    """

    limits: PoolLimits
    sizes: dict[str, int]
    load_s: float = 0.0
    gate: asyncio.Event | None = None
    fail: set[str] = field(default_factory=set)
    now: float = 0.0
    calls: list[str] = field(default_factory=list)
    unloaded: list[str] = field(default_factory=list)
    changes: list[list[str]] = field(default_factory=list)
    alive: dict[str, Version] = field(default_factory=dict)
    pool: VersionPool[Version] = field(init=False)

    def __post_init__(self) -> None:
        self.pool = VersionPool(
            self.limits,
            self.load,
            self.sizes.__getitem__,
            self.unload,
            clock=self.clock,
            on_change=lambda: self.changes.append(self.pool.keys()),
        )

    def clock(self) -> float:
        return self.now

    def check_limits(self) -> None:
        keys = self.pool.keys()
        assert len(keys) <= self.limits.max_versions
        if self.limits.max_bytes is not None:
            assert sum(self.sizes[key] for key in keys) <= self.limits.max_bytes
        # Whatever the pool dropped was unloaded: nothing lives outside it.
        assert set(self.alive) <= set(keys)

    async def load(self, key: str) -> Version:
        self.calls.append(key)
        routed = self.pool.keys()  # a loading version counts already
        assert key in routed
        self.check_limits()
        started = self.now
        if self.gate is not None:
            await self.gate.wait()
        await asyncio.sleep(self.load_s)
        self.now = started + 2.0  # every load takes 2 s by the pool's clock
        if key in self.fail:
            self.fail.discard(key)
            raise OSError(f"cannot read {key}")
        version = Version(key, self.calls.count(key))
        self.alive[key] = version
        return version

    def unload(self, version: Version) -> None:
        assert version.alive, f"{version.key} unloaded twice"
        version.alive = False
        del self.alive[version.key]
        self.unloaded.append(version.key)

    async def use(self, key: str, hold_s: float = 0.0) -> Version:
        async with self.pool.use(key) as version:
            assert version.key == key and version.alive
            self.check_limits()
            await asyncio.sleep(hold_s)
            assert version.alive
            return version


async def holding(store: Store, key: str, release: asyncio.Event) -> None:
    """Use version ``key`` until ``release`` is set."""
    async with store.pool.use(key):
        await release.wait()


def unloads(count: int = 0, bytes_: int = 0, idle: int = 0) -> dict[str, int]:
    return {"count": count, "bytes": bytes_, "idle": idle}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_versions": 0}, "max_versions"),
        ({"max_versions": 1, "max_bytes": 0}, "max_bytes"),
        ({"max_versions": 1, "unload_after_s": 0.0}, "unload_after_s"),
        ({"max_versions": 1, "unload_after_s": -1.0}, "unload_after_s"),
        ({"max_versions": 1, "retry_failed_after_s": -1.0}, "retry_failed_after"),
    ],
)
def test_bad_limits_are_refused(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        PoolLimits(**kwargs)


def test_a_version_loads_on_its_first_request_and_is_reused() -> None:
    store = Store(PoolLimits(max_versions=2), {"a": 10})

    async def scenario() -> None:
        assert (await store.use("a")).generation == 1
        assert (await store.use("a")).generation == 1

    asyncio.run(scenario())
    assert store.calls == ["a"]
    assert store.pool.stats() == PoolStats(
        loaded=("a",),
        loaded_bytes=10,
        loads=1,
        load_failures=0,
        load_seconds=2.0,
        unloads=unloads(),
        load_waits=1,
    )


def test_the_least_recently_used_version_is_evicted_for_count() -> None:
    store = Store(PoolLimits(max_versions=3), dict.fromkeys("abcde", 1))

    async def scenario() -> None:
        for key in "abcad":  # a used again: b is now the least recent
            await store.use(key)
        assert store.pool.stats().loaded == ("c", "a", "d")
        await store.use("e")

    asyncio.run(scenario())
    assert store.unloaded == ["b", "c"]
    stats = store.pool.stats()
    assert stats.loaded == ("a", "d", "e")
    assert stats.unloads == unloads(count=2)
    assert store.pool.keys() == ["a", "d", "e"]


def test_versions_are_evicted_until_the_new_one_fits_its_bytes() -> None:
    store = Store(
        PoolLimits(max_versions=10, max_bytes=100), {"a": 40, "b": 40, "c": 50, "d": 60}
    )

    async def scenario() -> None:
        for key in "abc":
            await store.use(key)
        # 40 + 40 + 50 > 100: a alone leaves, b and c fit (90).
        assert store.unloaded == ["a"]
        await store.use("d")  # 90 + 60: both b and c must leave

    asyncio.run(scenario())
    assert store.unloaded == ["a", "b", "c"]
    stats = store.pool.stats()
    assert (stats.loaded, stats.loaded_bytes) == (("d",), 60)
    assert stats.unloads == unloads(bytes_=3)


def test_each_eviction_is_counted_under_the_limit_that_forced_it() -> None:
    store = Store(
        PoolLimits(max_versions=2, max_bytes=100), {"a": 10, "b": 10, "c": 95}
    )

    async def scenario() -> None:
        for key in "abc":
            await store.use(key)

    asyncio.run(scenario())
    # a leaves for the count (3 > 2); then 10 + 95 > 100 still, so b for bytes.
    assert store.unloaded == ["a", "b"]
    assert store.pool.stats().unloads == unloads(count=1, bytes_=1)


def test_a_version_larger_than_the_pool_fails_without_loading() -> None:
    store = Store(PoolLimits(max_versions=4, max_bytes=100), {"a": 10, "huge": 101})

    async def scenario() -> None:
        await store.use("a")
        with pytest.raises(ServiceUnavailable) as raised:
            await store.use("huge")
        assert raised.value.message == (
            "version huge needs 101 bytes, more than its pool's limit of 100 bytes"
        )
        assert http_status(raised.value) == 503

    asyncio.run(scenario())
    assert store.calls == ["a"]
    assert store.unloaded == []
    assert store.pool.keys() == ["a"]
    assert store.pool.stats().load_waits == 1


def test_concurrent_first_requests_share_one_load() -> None:
    store = Store(PoolLimits(max_versions=2), {"a": 1})

    async def scenario() -> list[Version]:
        store.gate = asyncio.Event()
        users = [asyncio.create_task(store.use("a")) for _ in range(20)]
        await asyncio.sleep(0.01)
        assert store.pool.keys() == ["a"]  # loading: routed here already
        assert store.pool.stats().loaded == ()
        store.gate.set()
        return list(await asyncio.gather(*users))

    versions = asyncio.run(scenario())
    assert store.calls == ["a"]
    assert all(version is versions[0] for version in versions)
    stats = store.pool.stats()
    assert (stats.loads, stats.load_waits) == (1, 20)


def test_one_waiter_giving_up_does_not_cancel_the_load_for_the_others() -> None:
    store = Store(PoolLimits(max_versions=2), {"a": 1})

    async def scenario() -> list[Version]:
        store.gate = asyncio.Event()
        users = [asyncio.create_task(store.use("a")) for _ in range(3)]
        await asyncio.sleep(0.01)
        users[0].cancel()
        await asyncio.sleep(0.01)
        store.gate.set()
        return list(await asyncio.wait_for(asyncio.gather(*users[1:]), 1))

    versions = asyncio.run(scenario())
    assert [(v.key, v.generation) for v in versions] == [("a", 1), ("a", 1)]
    assert store.calls == ["a"]


def test_a_failed_load_fails_every_waiter_and_the_next_request_loads_again() -> None:
    store = Store(PoolLimits(max_versions=1), {"a": 1}, fail={"a"})

    async def scenario() -> Version:
        store.gate = asyncio.Event()
        users = [asyncio.create_task(store.use("a")) for _ in range(5)]
        await asyncio.sleep(0.01)
        store.gate.set()
        failed = await asyncio.gather(*users, return_exceptions=True)
        assert all(isinstance(error, OSError) for error in failed)
        # Nothing stays reserved: not routed here, and the limit of one is free.
        assert store.pool.keys() == []
        # For retry_failed_after_s its requests hear the failure, no new load.
        with pytest.raises(
            ServiceUnavailable, match=r"a: OSError.*the last load failed"
        ):
            await store.use("a")
        store.now += 5.0
        return await store.use("a")

    version = asyncio.run(scenario())
    assert (version.key, version.generation) == ("a", 2)
    assert store.calls == ["a", "a"]
    stats = store.pool.stats()
    assert (stats.loads, stats.load_failures, stats.load_waits) == (1, 1, 6)
    assert stats.load_seconds == 2.0  # the successful load only
    assert store.changes == [["a"], [], ["a"]]


def test_a_version_in_use_is_never_evicted_and_a_load_waits_for_it() -> None:
    store = Store(PoolLimits(max_versions=1), {"a": 1, "b": 1})

    async def scenario() -> None:
        release = asyncio.Event()

        holder = asyncio.create_task(holding(store, "a", release))
        await asyncio.sleep(0.01)
        waiting = asyncio.create_task(store.use("b"))
        await asyncio.sleep(0.01)
        assert store.calls == ["a"]
        assert store.pool.keys() == ["a"]
        # Waiting for room blocks nobody who uses what is loaded.
        assert (await asyncio.wait_for(store.use("a"), 1)).key == "a"
        assert not waiting.done()
        release.set()
        await holder
        assert (await asyncio.wait_for(waiting, 1)).key == "b"

    asyncio.run(scenario())
    assert store.calls == ["a", "b"]
    assert store.unloaded == ["a"]
    assert store.pool.stats().loaded == ("b",)


def test_a_loaded_version_is_kept_for_the_requests_that_waited_for_it() -> None:
    """Its waiters count as users from the start: a load that needs room right
    after it finished cannot take it away before they run."""
    store = Store(PoolLimits(max_versions=1), {"a": 1, "b": 1})

    async def scenario() -> None:
        store.gate = asyncio.Event()
        first = [asyncio.create_task(store.use("a", hold_s=0.01)) for _ in range(3)]
        await asyncio.sleep(0.01)
        store.gate.set()
        second = asyncio.create_task(store.use("b"))
        versions = await asyncio.gather(*first)
        assert all(version.key == "a" for version in versions)
        assert (await second).key == "b"

    asyncio.run(scenario())
    assert store.calls == ["a", "b"]
    assert store.unloaded == ["a"]


def test_a_load_nobody_waits_for_any_more_never_starts() -> None:
    store = Store(PoolLimits(max_versions=1), {"a": 1, "b": 1})

    async def scenario() -> None:
        release = asyncio.Event()

        holder = asyncio.create_task(holding(store, "a", release))
        await asyncio.sleep(0.01)
        gone = asyncio.create_task(store.use("b"))
        await asyncio.sleep(0.01)
        gone.cancel()
        await asyncio.sleep(0.01)
        release.set()
        await holder
        await asyncio.sleep(0.01)

    asyncio.run(scenario())
    assert store.calls == ["a"]
    assert store.unloaded == []
    assert store.pool.keys() == ["a"]


def test_versions_idle_for_unload_after_s_are_unloaded() -> None:
    store = Store(
        PoolLimits(max_versions=4, unload_after_s=10.0), dict.fromkeys("abc", 1)
    )

    async def scenario() -> None:
        await store.use("a")  # loaded from 0 to 2
        store.now = 5.0
        await store.use("b")  # last used at 7
        store.now = 8.0
        await store.use("c")  # last used at 10
        store.now = 11.0
        await store.use("a")  # used again: last used at 11, not 2
        store.now = 17.5
        assert store.pool.unload_idle() == ["b"]
        assert store.pool.unload_idle() == []
        store.now = 20.5  # c idle 10.5 s, a only 9.5 s
        assert store.pool.unload_idle() == ["c"]
        store.now = 21.5
        assert store.pool.unload_idle() == ["a"]

    asyncio.run(scenario())
    assert store.unloaded == ["b", "c", "a"]
    assert store.pool.stats().unloads == unloads(idle=3)
    assert store.pool.keys() == []
    assert store.changes[-3:] == [["a", "c"], ["a"], []]


def test_a_version_in_use_is_not_idle_however_long_it_runs() -> None:
    store = Store(PoolLimits(max_versions=4, unload_after_s=10.0), {"a": 1})

    async def scenario() -> None:
        async with store.pool.use("a"):
            store.now = 100.0
            assert store.pool.unload_idle() == []
        # Its last use ended just now.
        store.now = 109.0
        assert store.pool.unload_idle() == []
        store.now = 110.5
        assert store.pool.unload_idle() == ["a"]

    asyncio.run(scenario())


def test_without_unload_after_s_nothing_is_ever_idle() -> None:
    store = Store(PoolLimits(max_versions=4), {"a": 1})

    async def scenario() -> None:
        await store.use("a")
        store.now = 1e9
        assert store.pool.unload_idle() == []

    asyncio.run(scenario())
    assert store.pool.keys() == ["a"]


def test_an_evicted_version_loads_again_on_its_next_request() -> None:
    store = Store(PoolLimits(max_versions=1), {"a": 1, "b": 1})

    async def scenario() -> list[Version]:
        return [await store.use(key) for key in "abab"]

    versions = asyncio.run(scenario())
    assert [(v.key, v.generation) for v in versions] == [
        ("a", 1),
        ("b", 1),
        ("a", 2),
        ("b", 2),
    ]
    assert [v.alive for v in versions] == [False, False, False, True]
    assert store.unloaded == ["a", "b", "a"]


def test_on_change_sees_every_change_of_keys() -> None:
    store = Store(
        PoolLimits(max_versions=2, unload_after_s=1.0), dict.fromkeys("abc", 1)
    )

    async def scenario() -> None:
        await store.use("a")
        await store.use("a")  # already loaded: no change
        await store.use("b")
        await store.use("c")  # a evicted and c loading, one change
        store.now += 10
        store.pool.unload_idle()

    asyncio.run(scenario())
    assert store.changes == [["a"], ["a", "b"], ["b", "c"], []]


def test_a_failing_unload_is_logged_and_the_pool_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    calls: list[str] = []

    def unload(value: str) -> None:
        calls.append(value)
        raise RuntimeError("close failed")

    async def load(key: str) -> str:
        return key

    pool: VersionPool[str] = VersionPool(PoolLimits(max_versions=1), load, len, unload)

    async def scenario() -> list[str]:
        seen = []
        for key in ("a", "bb", "a"):
            async with pool.use(key) as value:
                seen.append(value)
        return seen

    with caplog.at_level(logging.ERROR, logger="rayfleet.platform.serving.pool"):
        assert asyncio.run(scenario()) == ["a", "bb", "a"]
    assert calls == ["a", "bb"]
    assert "unloading version a failed" in caplog.text
    assert pool.stats().unloads == unloads(count=2)


def test_close_unloads_everything_and_cancels_loads() -> None:
    store = Store(PoolLimits(max_versions=4), {"a": 1, "b": 1})

    async def scenario() -> None:
        await store.use("a")
        store.gate = asyncio.Event()
        loading = asyncio.create_task(store.use("b"))
        await asyncio.sleep(0.01)
        store.pool.close()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(loading, 1)
        with pytest.raises(RuntimeError, match="closed"):
            await store.use("a")

    asyncio.run(scenario())
    assert store.unloaded == ["a"]
    assert store.pool.keys() == []
    assert store.changes[-1] == []
    # Closing is not an eviction: the reasons count only what the limits did.
    assert store.pool.stats().unloads == unloads()


def test_stats_list_every_unload_reason() -> None:
    pool: VersionPool[str] = VersionPool(PoolLimits(max_versions=1), _echo, len)
    assert tuple(pool.stats().unloads) == UNLOAD_REASONS == ("count", "bytes", "idle")


async def _echo(key: str) -> str:
    return key


@settings(max_examples=60, deadline=None)
@given(
    sizes=st.dictionaries(
        st.sampled_from("abcdef"), st.integers(min_value=1, max_value=60), min_size=1
    ),
    max_versions=st.integers(min_value=1, max_value=4),
    max_bytes=st.none() | st.integers(min_value=1, max_value=120),
    steps=st.lists(
        st.tuples(
            st.integers(min_value=0, max_value=5),  # which key
            st.integers(min_value=0, max_value=3),  # how long it holds, ms
            st.booleans(),  # whether the next request waits for this one
        ),
        min_size=1,
        max_size=30,
    ),
    fail=st.sets(st.sampled_from("abcdef"), max_size=2),
)
def test_limits_hold_and_every_use_gets_its_own_version(
    sizes: dict[str, int],
    max_versions: int,
    max_bytes: int | None,
    steps: list[tuple[int, int, bool]],
    fail: set[str],
) -> None:
    """Whatever the order, overlap and sizes: the limits hold at every load and
    every use (checked inside them), each use gets its own key's live version,
    failures and too-large versions fail only their own requests, and all ends."""
    keys = sorted(sizes)
    # Retried at once: the backoff after a failure has a test of its own.
    limits = PoolLimits(
        max_versions=max_versions, max_bytes=max_bytes, retry_failed_after_s=0.0
    )
    store = Store(limits, sizes, load_s=0.001, fail=set(fail))

    async def one(key: str, hold_ms: int) -> str:
        try:
            version = await store.use(key, hold_ms / 1000)
        except ServiceUnavailable:
            assert max_bytes is not None and sizes[key] > max_bytes
            return "too large"
        except OSError:
            return "failed"
        assert version.key == key
        return "ok"

    async def scenario() -> list[str]:
        tasks = []
        for index, hold_ms, wait in steps:
            task = asyncio.create_task(one(keys[index % len(keys)], hold_ms))
            tasks.append(task)
            if wait:
                await task
        return list(await asyncio.wait_for(asyncio.gather(*tasks), 10))

    outcomes = asyncio.run(scenario())
    failed = outcomes.count("failed")
    stats = store.pool.stats()
    assert stats.load_failures == len(set(store.calls) & fail) <= failed
    assert stats.loads == len(store.calls) - stats.load_failures
    assert stats.loaded_bytes == sum(sizes[key] for key in stats.loaded)
    assert set(stats.loaded) == set(store.alive)
    assert sum(stats.unloads.values()) == len(store.unloaded)
    assert len(stats.loaded) <= max_versions
    assert max_bytes is None or stats.loaded_bytes <= max_bytes
