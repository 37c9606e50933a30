"""Dynamic batching that forms each batch when the model is free to run it.

Serve's ``@serve.batch`` (2.60) closes a batch ``batch_wait_timeout_s`` after its
first request and only then waits for the model: while one batch runs, the next
ones are cut from whatever arrived within a few milliseconds of each other, and
queue up behind it small. For a model that takes longer than the timeout (any
GPU model, an image CNN on a CPU) that caps throughput at a fraction of what the
batch size allows (``loadtest/bench_batcher.py``).

:class:`DynamicBatcher` cuts a batch only when a worker is free, the way Triton's
dynamic batcher does: everything that queued while the model was busy goes into
the next call, up to ``max_batch_size``. ``max_wait_s`` bounds how long a request
waits *for company*, counted from its own arrival, so an idle model still batches
a burst and a busy one adds no delay at all.

An idle model waits only on evidence that company is coming: another request
arrived within ``max_wait_s`` before this one. A lone request (one client in a
closed loop, sparse traffic) runs at once instead of paying the whole wait for
nobody, as Triton's dynamic batcher does with its default queue delay of 0.
Requests that arrive together are still one batch: they are all queued by the
time the worker wakes (or, with several workers free, shared among them).

``max_batch_bytes`` bounds a batch by the sum of ``size_of`` over its items as
well; an item larger than the bound still goes, in a batch of its own. The router
uses the same class, with ``max_wait_s=0``, to group the requests it sends to a
version's replicas (:mod:`rayfleet.platform.serving.grouping`).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

__all__ = ["BatchFunction", "DynamicBatcher"]

Item = TypeVar("Item")
Result = TypeVar("Result")

# Runs one batch; returns one result or exception per item, in order.
BatchFunction = Callable[[list[Item]], Awaitable[Sequence[Result | BaseException]]]


@dataclass
class _Pending(Generic[Item, Result]):
    item: Item
    arrived: float
    future: asyncio.Future[Result] = field(repr=False)
    # No other request arrived within max_wait_s before this one.
    alone: bool = False
    # What it counts against max_batch_bytes (0 without a byte bound).
    size: int = 0


class DynamicBatcher(Generic[Item, Result]):
    """Collects concurrent :meth:`submit` calls into batches for ``run``.

    At most ``max_concurrent`` batches run at once (one per model instance). Must
    be used from one event loop; its workers start with the first submission.
    With ``max_concurrent`` above one, a free worker starts a batch of its own
    even while another worker's batch still waits for company, and takes only its
    share of the queue: requests queued at once are spread over the free workers,
    so each starts at once, rather than all given to the first. ``wait_alone``
    makes a lone request wait ``max_wait_s`` too (Serve's rule, and this one's
    before): ``loadtest/bench_batcher.py`` measures the two side by side.
    ``size_of`` and ``max_batch_bytes`` go together: a batch holds items whose
    sizes add up to at most ``max_batch_bytes``, or one item larger than that.
    """

    def __init__(
        self,
        run: BatchFunction[Item, Result],
        max_batch_size: int,
        max_wait_s: float,
        max_concurrent: int = 1,
        *,
        wait_alone: bool = False,
        size_of: Callable[[Item], int] | None = None,
        max_batch_bytes: int | None = None,
    ) -> None:
        if max_batch_size < 1 or max_concurrent < 1 or max_wait_s < 0:
            raise ValueError(
                "max_batch_size and max_concurrent must be >= 1 and max_wait_s >= 0"
            )
        if (size_of is None) != (max_batch_bytes is None) or (
            max_batch_bytes is not None and max_batch_bytes < 1
        ):
            raise ValueError("size_of and max_batch_bytes >= 1 go together")
        self.run = run
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_s
        self.max_concurrent = max_concurrent
        self.wait_alone = wait_alone
        self.size_of = size_of
        self.max_batch_bytes = max_batch_bytes
        self._last_arrival = -math.inf
        self._queue: deque[_Pending[Item, Result]] = deque()
        # Wakes the workers waiting for company for their batch.
        self._arrival = asyncio.Event()
        # One per worker waiting for a first request: an arrival wakes one, not
        # all, so many idle workers (the router's call slots) cost nothing per
        # request.
        self._idle: deque[asyncio.Future[None]] = deque()
        self._workers: list[asyncio.Task[None]] = []
        # Workers inside ``run``: the others are free to take a batch.
        self._running = 0

    def __len__(self) -> int:
        """Requests waiting for a batch."""
        return len(self._queue)

    async def submit(self, item: Item) -> Result:
        """Queue ``item`` and wait for its result (or its batch's exception)."""
        self._start_workers()
        future: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        now = time.monotonic()
        alone = now - self._last_arrival > self.max_wait_s and not self.wait_alone
        self._last_arrival = now
        size = self.size_of(item) if self.size_of is not None else 0
        self._queue.append(_Pending(item, now, future, alone, size))
        self._arrival.set()
        while self._idle:
            idle = self._idle.popleft()
            if not idle.done():  # a worker cancelled while idle needs no wake
                idle.set_result(None)
                break
        return await future

    def _start_workers(self) -> None:
        # Called on every submission: a worker that ends takes itself out of the
        # list, so the check costs nothing however many workers there are.
        loop = asyncio.get_running_loop()
        while len(self._workers) < self.max_concurrent:
            worker = loop.create_task(self._work())
            worker.add_done_callback(self._workers.remove)
            self._workers.append(worker)

    def _take(self, batch: list[_Pending[Item, Result]]) -> bool:
        """Move queued requests into ``batch`` up to its bounds and this worker's
        share of the queue; True when the next one is left out for its bytes,
        so the batch can take no more."""
        taken = sum(pending.size for pending in batch)
        # Every free worker was woken by an arrival and takes at least one, so
        # none is left queued; spread, the router's calls carry one request
        # each until every call slot is busy, as Serve's autoscaler assumes.
        free = max(self.max_concurrent - self._running, 1)
        limit = min(
            self.max_batch_size, len(batch) + math.ceil(len(self._queue) / free)
        )
        while self._queue and len(batch) < limit:
            pending = self._queue[0]
            # A caller that gave up (its request cancelled) needs no answer.
            if pending.future.done():
                self._queue.popleft()
                continue
            if (
                batch
                and self.max_batch_bytes is not None
                and taken + pending.size > self.max_batch_bytes
            ):
                return True
            batch.append(self._queue.popleft())
            taken += pending.size
        return False

    async def _wait_idle(self) -> None:
        idle: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._idle.append(idle)
        await idle

    async def _fill(self, batch: list[_Pending[Item, Result]]) -> None:
        """Take the next batch into ``batch``: at least one live request, then
        more until it is full or its first request has waited ``max_wait_s``;
        a request that arrived alone and found nothing queued waits for nobody."""
        full = False
        while not batch:
            if not self._queue:
                await self._wait_idle()
            full = self._take(batch)
        if full or (len(batch) == 1 and batch[0].alone):
            return
        while len(batch) < self.max_batch_size:
            remaining = batch[0].arrived + self.max_wait_s - time.monotonic()
            if remaining <= 0:
                break
            self._arrival.clear()
            # asyncio's own TimeoutError: not the builtin before Python 3.11.
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._arrival.wait(), remaining)
            if self._take(batch):
                break

    async def _work(self) -> None:
        while True:
            batch: list[_Pending[Item, Result]] = []
            try:
                await self._fill(batch)
                self._running += 1
                try:
                    results = await self.run([pending.item for pending in batch])
                finally:
                    self._running -= 1
                if len(results) != len(batch):
                    raise RuntimeError(
                        f"a batch of {len(batch)} returned {len(results)} results"
                    )
            except Exception as error:  # the whole batch failed: each caller hears
                results = [error] * len(batch)
            except BaseException:
                # The worker itself is ending (cancelled with its event loop):
                # nobody may be left waiting on a batch it took.
                for pending in batch:
                    pending.future.cancel()
                raise
            _answer(batch, results)


def _answer(
    batch: list[_Pending[Item, Result]], results: Sequence[Result | BaseException]
) -> None:
    for pending, result in zip(batch, results, strict=True):
        if pending.future.done():
            continue
        if isinstance(result, BaseException):
            pending.future.set_exception(result)
        else:
            pending.future.set_result(result)
