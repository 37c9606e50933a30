"""The versions a pool replica holds: loaded on first request, bounded, LRU.

A version placed in a pool has no replica of its own. One pool replica serves
many versions, more than it could hold at once, so it loads a version when the
first request for it arrives and keeps it while it is used. Memory is bounded by
the pool's limits, a count of versions and optionally their bytes: to make room
for a new version the least recently used idle ones are unloaded, and a version
nobody asked for in ``unload_after_s`` is unloaded by :meth:`VersionPool.unload_idle`.

:class:`VersionPool` is that cache with nothing of Ray in it: what a version is
(its runner), how it loads and how it is closed come in as callables, so the
shell (``rayfleet/deployments/pool.py``) supplies them and the rules here are
tested on their own. Everything runs on one event loop; no method may be called
from another thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Generic, TypeVar

from rayfleet.platform.errors import ServiceUnavailable

__all__ = ["UNLOAD_REASONS", "PoolLimits", "PoolStats", "VersionPool"]

logger = logging.getLogger(__name__)

# Why a version was unloaded: to keep within max_versions, within max_bytes, or
# because nobody used it for unload_after_s.
UNLOAD_REASONS: tuple[str, ...] = ("count", "bytes", "idle")

T = TypeVar("T")


@dataclass(frozen=True)
class PoolLimits:
    """How much one pool replica may hold at once.

    ``max_versions``: versions loaded or loading. ``max_bytes``: their summed
    sizes, or no byte bound when None. ``unload_after_s``: how long a version may
    sit unused before :meth:`VersionPool.unload_idle` unloads it; never when None.
    ``retry_failed_after_s``: how long a version whose load failed answers its
    requests with that failure before it is tried again.
    """

    max_versions: int
    max_bytes: int | None = None
    unload_after_s: float | None = None
    # A broken version (corrupt weights, a loader that raises) would otherwise
    # be fetched and loaded again for every request: a remote store downloaded
    # from in a loop, and the other versions' loads made to wait for room.
    retry_failed_after_s: float = 5.0

    def __post_init__(self) -> None:
        if self.max_versions < 1:
            raise ValueError(f"max_versions must be >= 1, got {self.max_versions}")
        if self.max_bytes is not None and self.max_bytes < 1:
            raise ValueError(f"max_bytes must be >= 1 when set, got {self.max_bytes}")
        if self.unload_after_s is not None and not self.unload_after_s > 0:
            raise ValueError(
                f"unload_after_s must be > 0 when set, got {self.unload_after_s}"
            )
        if self.retry_failed_after_s < 0:
            raise ValueError(
                f"retry_failed_after_s must be >= 0, got {self.retry_failed_after_s}"
            )


@dataclass(frozen=True)
class PoolStats:
    """A snapshot of a pool's contents and of its totals since it was made.

    ``loaded``: loaded keys, least recently used first (loading ones are not
    listed). ``loads`` and ``load_seconds`` count successful loads only, so their
    ratio is the mean load time; ``load_failures`` counts the others.
    ``unloads``: per reason of :data:`UNLOAD_REASONS`, every one present.
    ``load_waits``: requests that found their version not loaded and waited.
    """

    loaded: tuple[str, ...]
    loaded_bytes: int
    loads: int
    load_failures: int
    load_seconds: float
    unloads: Mapping[str, int]
    load_waits: int


class _Entry(Generic[T]):
    """One version from its first request until it is unloaded or fails."""

    def __init__(self, key: str, size: int, future: asyncio.Future[T]) -> None:
        self.key = key
        self.size = size
        # Holds the loaded value, or the load's error, for every waiter at once.
        self.future = future
        self.loaded = False
        # Requests inside use() and requests waiting for the load: while above
        # zero the entry is never evicted.
        self.users = 0
        self.last_used = 0.0
        self.task: asyncio.Task[None] | None = None


class VersionPool(Generic[T]):
    """Versions loaded on demand and unloaded least recently used first.

    ``load(key)`` makes a version's value (the shell's runner, warmed up);
    ``size_of(key)`` its size in bytes, known before loading; ``unload(value)``
    releases one (called once per value that leaves the pool; its errors are
    logged, not raised). ``on_change()`` is called whenever :meth:`keys` changes,
    so the shell can tell the router which versions this replica holds.

    A caller must not use a second version of the same pool while it holds one:
    with the pool full of held versions, that request would wait for itself.
    """

    def __init__(
        self,
        limits: PoolLimits,
        load: Callable[[str], Awaitable[T]],
        size_of: Callable[[str], int],
        unload: Callable[[T], None] | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        on_change: Callable[[], None] | None = None,
    ) -> None:
        self.limits = limits
        self._load = load
        self._size_of = size_of
        self._unload = unload
        self._clock = clock
        self._on_change = on_change
        # Loading and loaded entries, which count against the limits; least
        # recently used first.
        self._entries: OrderedDict[str, _Entry[T]] = OrderedDict()
        # Entries whose load waits for room; they count against nothing yet.
        self._waiting: dict[str, _Entry[T]] = {}
        # Versions whose last load failed: when, and what their requests hear.
        self._failed: dict[str, tuple[float, str]] = {}
        # Set, then replaced, whenever room may have appeared: a use ended, a
        # load ended, or versions were unloaded. No lock: nothing a finishing
        # request needs is ever held while waiting.
        self._room = asyncio.Event()
        self._closed = False
        self._loads = 0
        self._load_failures = 0
        self._load_seconds = 0.0
        self._load_waits = 0
        self._unloads = dict.fromkeys(UNLOAD_REASONS, 0)

    @contextlib.asynccontextmanager
    async def use(self, key: str) -> AsyncIterator[T]:
        """Yield the loaded value of version ``key``, loading it first if needed.

        Concurrent first requests for a version share one load and all get its
        value, or its exception. While inside the block the version is never
        unloaded. Raises :class:`ServiceUnavailable` when the version alone is
        larger than ``max_bytes``, and :class:`RuntimeError` after :meth:`close`.
        """
        entry = await self._acquire(key)
        try:
            yield entry.future.result()
        finally:
            self._release(entry)

    def keys(self) -> list[str]:
        """Loaded and loading versions, sorted: the ones to route here."""
        return sorted(self._entries)

    def unload_idle(self) -> list[str]:
        """Unload versions unused for more than ``unload_after_s``; their keys.

        Keys are returned least recently used first. Nothing happens when
        ``unload_after_s`` is None.
        """
        after = self.limits.unload_after_s
        if after is None:
            return []
        now = self._clock()
        idle = [
            entry
            for entry in self._entries.values()
            if entry.loaded and not entry.users and now - entry.last_used > after
        ]
        for entry in idle:
            del self._entries[entry.key]
            self._unloads["idle"] += 1
        self._after_removal(idle)
        return [entry.key for entry in idle]

    def close(self) -> None:
        """Unload every loaded version and cancel loads; for replica shutdown.

        Requests waiting for a load are cancelled; later requests raise
        :class:`RuntimeError`.
        """
        self._closed = True
        unfinished = [entry for entry in self._entries.values() if not entry.loaded]
        unfinished += self._waiting.values()
        for entry in unfinished:
            if entry.task is not None:
                entry.task.cancel()
            entry.future.cancel()
        loaded = [entry for entry in self._entries.values() if entry.loaded]
        changed = bool(self._entries)
        self._entries.clear()
        self._waiting.clear()
        self._unload_all(loaded)
        if changed:
            self._changed()
        self._wake()

    def stats(self) -> PoolStats:
        """The pool's contents now and its totals so far."""
        loaded = [entry for entry in self._entries.values() if entry.loaded]
        return PoolStats(
            loaded=tuple(entry.key for entry in loaded),
            loaded_bytes=sum(entry.size for entry in loaded),
            loads=self._loads,
            load_failures=self._load_failures,
            load_seconds=self._load_seconds,
            unloads=MappingProxyType(dict(self._unloads)),
            load_waits=self._load_waits,
        )

    async def _acquire(self, key: str) -> _Entry[T]:
        """The entry for ``key``, loaded, with this request counted as a user."""
        if self._closed:
            raise RuntimeError("VersionPool is closed")
        entry = self._entries.get(key) or self._waiting.get(key)
        if entry is not None and entry.loaded:
            entry.users += 1
            self._entries.move_to_end(key)
            return entry
        if entry is None:
            self._refuse_if_failed(key)
            entry = self._start(key)
        # Counted before waiting, so the version cannot be evicted between the
        # end of its load and the moment this request runs again.
        entry.users += 1
        self._load_waits += 1
        try:
            # Shielded: one waiter giving up must not cancel the others' load.
            await asyncio.shield(entry.future)
        except BaseException:
            self._release(entry)
            raise
        return entry

    def _refuse_if_failed(self, key: str) -> None:
        failure = self._failed.get(key)
        if failure is None:
            return
        at, reason = failure
        if self._clock() - at >= self.limits.retry_failed_after_s:
            del self._failed[key]
            return
        raise ServiceUnavailable(
            f"{reason} (the last load failed; trying again "
            f"{self.limits.retry_failed_after_s:g} s after it)"
        )

    def _start(self, key: str) -> _Entry[T]:
        """A new entry for ``key`` and the task that makes room and loads it."""
        size = self._size_of(key)
        max_bytes = self.limits.max_bytes
        if max_bytes is not None and size > max_bytes:
            raise ServiceUnavailable(
                f"version {key} needs {size} bytes, more than its pool's limit of "
                f"{max_bytes} bytes"
            )
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        # A failed load whose waiters all gave up must not be logged as an
        # exception nobody retrieved.
        future.add_done_callback(_retrieve)
        entry = _Entry(key, size, future)
        self._waiting[key] = entry
        entry.task = asyncio.create_task(self._fill(entry))
        return entry

    async def _fill(self, entry: _Entry[T]) -> None:
        """Wait for room for ``entry``, then load it and tell its waiters."""
        while not self._reserve(entry):
            await self._room.wait()
        started = self._clock()
        try:
            value = await self._load(entry.key)
        except Exception as error:
            if self._entries.get(entry.key) is entry:
                del self._entries[entry.key]
                self._changed()
            self._load_failures += 1
            message = getattr(error, "message", None) or f"{entry.key}: {error!r}"
            self._failed[entry.key] = (self._clock(), str(message))
            if not entry.future.done():
                entry.future.set_exception(error)
            self._wake()
            return
        except BaseException:
            # Cancelled by close(), which already dropped the entry.
            if not entry.future.done():
                entry.future.cancel()
            raise
        self._loads += 1
        self._load_seconds += self._clock() - started
        entry.loaded = True
        entry.last_used = self._clock()
        self._entries.move_to_end(entry.key)
        entry.future.set_result(value)
        self._wake()

    def _reserve(self, entry: _Entry[T]) -> bool:
        """Make room for ``entry`` and count it as loading, if the limits allow.

        Evicts least recently used versions that are loaded and unused, only when
        evicting them is enough; otherwise evicts nothing and answers False, so
        versions are not dropped for a load that cannot start yet anyway.
        """
        count = len(self._entries)
        used = sum(other.size for other in self._entries.values())
        victims: list[tuple[_Entry[T], str]] = []
        for other in self._entries.values():
            count_over = count + 1 > self.limits.max_versions
            if not count_over and self._fits(used + entry.size):
                break
            if other.loaded and not other.users:
                victims.append((other, "count" if count_over else "bytes"))
                count -= 1
                used -= other.size
        if count + 1 > self.limits.max_versions or not self._fits(used + entry.size):
            return False
        for victim, reason in victims:
            del self._entries[victim.key]
            self._unloads[reason] += 1
        del self._waiting[entry.key]
        self._entries[entry.key] = entry
        self._unload_all([victim for victim, _ in victims])
        self._changed()
        return True

    def _fits(self, total_bytes: int) -> bool:
        return self.limits.max_bytes is None or total_bytes <= self.limits.max_bytes

    def _release(self, entry: _Entry[T]) -> None:
        """One user of ``entry`` is done with it (or gave up waiting)."""
        entry.users -= 1
        if entry.users:
            return
        if entry.loaded:
            entry.last_used = self._clock()
            self._wake()
        elif self._waiting.get(entry.key) is entry:
            # Its last waiter gave up before it found room: nobody needs the
            # load, and evicting a version for it would only cost.
            del self._waiting[entry.key]
            if entry.task is not None:
                entry.task.cancel()
            entry.future.cancel()

    def _after_removal(self, removed: list[_Entry[T]]) -> None:
        if not removed:
            return
        self._unload_all(removed)
        self._changed()
        self._wake()

    def _unload_all(self, removed: list[_Entry[T]]) -> None:
        if self._unload is None:
            return
        for entry in removed:
            try:
                self._unload(entry.future.result())
            except Exception:
                # The entry is gone either way; one bad close must not stop the
                # pool from serving the others.
                logger.exception("unloading version %s failed", entry.key)

    def _changed(self) -> None:
        if self._on_change is None:
            return
        try:
            self._on_change()
        except Exception:
            # Publishing the keys is advisory (routing prefers replicas that hold
            # a version); the pool's own state is already consistent.
            logger.exception("on_change failed")

    def _wake(self) -> None:
        """Wake every load waiting for room; they check the limits again."""
        self._room.set()
        self._room = asyncio.Event()


def _retrieve(future: asyncio.Future[T]) -> None:
    if not future.cancelled():
        future.exception()
