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
time the worker wakes.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
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
    # Where it was submitted, when batches run in their first request's context.
    context: contextvars.Context | None = None


class DynamicBatcher(Generic[Item, Result]):
    """Collects concurrent :meth:`submit` calls into batches for ``run``.

    At most ``max_concurrent`` batches run at once (one per model instance). Its
    workers start with the first submission, on that submission's event loop; a
    submission from another loop (a script's second ``asyncio.run``) starts them
    afresh there, and what still waited on the old loop is dropped.
    With ``max_concurrent`` above one, a free worker starts a batch of its own
    even while another worker's batch still waits for company. ``wait_alone``
    makes a lone request wait ``max_wait_s`` too (Serve's rule, and this one's
    before): ``loadtest/bench_batcher.py`` measures the two side by side.

    ``carry_context`` runs each batch in the :mod:`contextvars` context its first
    request was submitted in, so what that request set there (its trace span) is
    current while the model runs; without it, every batch runs in the context
    of the submission that started its worker.
    """

    def __init__(
        self,
        run: BatchFunction[Item, Result],
        max_batch_size: int,
        max_wait_s: float,
        max_concurrent: int = 1,
        *,
        wait_alone: bool = False,
        carry_context: bool = False,
    ) -> None:
        if max_batch_size < 1 or max_concurrent < 1 or max_wait_s < 0:
            raise ValueError(
                "max_batch_size and max_concurrent must be >= 1 and max_wait_s >= 0"
            )
        self.run = run
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_s
        self.max_concurrent = max_concurrent
        self.wait_alone = wait_alone
        self.carry_context = carry_context
        self._last_arrival = -math.inf
        self._queue: deque[_Pending[Item, Result]] = deque()
        self._arrival = asyncio.Event()
        self._workers: list[asyncio.Task[None]] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False

    def __len__(self) -> int:
        """Requests waiting for a batch."""
        return len(self._queue)

    async def submit(self, item: Item) -> Result:
        """Queue ``item`` and wait for its result (or its batch's exception).

        Raises :class:`RuntimeError` once the batcher is closed; a request still
        queued when it closes is cancelled.
        """
        if self._closed:
            raise RuntimeError("DynamicBatcher is closed")
        self._bind()
        self._start_workers()
        future: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        now = time.monotonic()
        alone = now - self._last_arrival > self.max_wait_s and not self.wait_alone
        self._last_arrival = now
        context = contextvars.copy_context() if self.carry_context else None
        self._queue.append(_Pending(item, now, future, alone, context))
        self._arrival.set()
        return await future

    def close(self) -> None:
        """Stop the workers and cancel every request still queued.

        For a version that is being unloaded: its workers would otherwise wait
        for arrivals for ever, holding the model. A batch already running is
        cancelled with its worker, which cancels that batch's callers itself.
        """
        self._closed = True
        for worker in self._workers:
            worker.cancel()
        self._workers = []
        # No worker will take these any more: nobody may be left waiting.
        while self._queue:
            self._queue.popleft().future.cancel()

    def _bind(self) -> None:
        loop = asyncio.get_running_loop()
        if loop is self._loop:
            return
        # An Event and tasks belong to the loop they were first used on: the
        # old loop's workers and waiters can never run again.
        self._loop = loop
        self._arrival = asyncio.Event()
        self._workers = []
        self._queue.clear()

    def _start_workers(self) -> None:
        if len(self._workers) == self.max_concurrent and not any(
            worker.done() for worker in self._workers
        ):
            return
        self._workers = [w for w in self._workers if not w.done()]
        loop = asyncio.get_running_loop()
        while len(self._workers) < self.max_concurrent:
            self._workers.append(loop.create_task(self._work()))

    def _take(self, batch: list[_Pending[Item, Result]]) -> None:
        # A caller that gave up (its request cancelled) needs no answer.
        while self._queue and len(batch) < self.max_batch_size:
            pending = self._queue.popleft()
            if not pending.future.done():
                batch.append(pending)

    async def _fill(self, batch: list[_Pending[Item, Result]]) -> None:
        """Take the next batch into ``batch``: at least one live request, then
        more until it is full or its first request has waited ``max_wait_s``;
        a request that arrived alone and found nothing queued waits for nobody."""
        while not batch:
            if not self._queue:
                self._arrival.clear()
                await self._arrival.wait()
            self._take(batch)
        if len(batch) == 1 and batch[0].alone:
            return
        while len(batch) < self.max_batch_size:
            remaining = batch[0].arrived + self.max_wait_s - time.monotonic()
            if remaining <= 0:
                break
            self._arrival.clear()
            # asyncio's own TimeoutError: not the builtin before Python 3.11.
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._arrival.wait(), remaining)
            self._take(batch)

    async def _work(self) -> None:
        while True:
            batch: list[_Pending[Item, Result]] = []
            try:
                await self._fill(batch)
                items = [pending.item for pending in batch]
                context = batch[0].context
                if context is None:
                    results = await self.run(items)
                else:
                    # A task copies the context current where it is made.
                    results = await context.run(asyncio.ensure_future, self.run(items))
                if len(results) != len(batch):
                    raise RuntimeError(
                        f"a batch of {len(batch)} returned {len(results)} results"
                    )
            except Exception as error:  # the whole batch failed: each caller hears
                if not batch:
                    # Nothing was taken: the worker itself is broken, and
                    # looping on would spin.
                    raise
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
