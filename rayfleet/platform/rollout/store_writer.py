"""The controller's store writes, applied in order without blocking the caller.

The store is synchronous (a pyarrow filesystem): on S3 each state save and each
history append is an HTTP PUT. The Validator runs the controller on its replica's
event loop, the loop that also answers the routers' calls (their observations
in, the plans out) and serves the pages, so a slow PUT made there stalls all of them.
:class:`BackgroundWriter` takes each write, copies it, and applies it later on one
daemon thread, in the order the writes were submitted. Nothing reads the state
back while the controller runs: its memory stays the truth, and the store only
has to catch up.

Order, and what happens when the store falls behind:

- A state save replaces the whole document, so only the latest per key matters.
  A save for a key whose earlier save is still queued (not yet started) takes
  that save's place: it lands no later than the earlier one would have, an older
  document never lands after a newer one, and the queue holds at most one save
  per key (one per model), so saves are never refused.
- History appends are never merged. At most ``max_pending`` wait; one more is
  dropped, counted (:attr:`BackgroundWriter.dropped`) and reported, never
  silently: the decision is still in the Validator's log as its JSON line.
- A write that raises is counted (:attr:`failures`) and reported: to the
  ``on_error`` it came with, or else as a warning naming its key and the error,
  never the document. The thread goes on with the next write.

:class:`SynchronousWriter` applies each write at once on the caller's thread, the
same way: for tests and one-process tools, where nothing else waits on the caller.
"""

from __future__ import annotations

import copy
import logging
import threading
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from rayfleet.platform.errors import StoreError
from rayfleet.platform.rollout.state_store import StateStore

__all__ = [
    "DEFAULT_MAX_PENDING",
    "BackgroundWriter",
    "ErrorCallback",
    "StoreWriter",
    "SynchronousWriter",
]

logger = logging.getLogger(__name__)

# History appends waiting at once before more are dropped. A rollout writes about
# six entries, so a thousand means the store has taken nothing for a long while;
# each entry is a few kilobytes, so the queue stays small even then.
DEFAULT_MAX_PENDING = 1000

ErrorCallback = Callable[[Exception], None]


class StoreWriter(Protocol):
    """Where the controller sends its state saves and history appends."""

    # State saves the store refused, for /metrics (history has its own count).
    state_failures: int

    def write_state(self, key: str, state: Mapping[str, Any]) -> None:
        """Replace the state document under ``key``; never raises for the store."""
        ...

    def append_history(
        self,
        key: str,
        entry: Mapping[str, Any],
        on_error: ErrorCallback | None = None,
    ) -> None:
        """Append ``entry`` under ``key``; a failure goes to ``on_error``."""
        ...

    def flush(self, timeout: float) -> bool:
        """Wait up to ``timeout`` s for every write submitted so far to be done."""
        ...

    def close(self, timeout: float) -> bool:
        """Refuse new writes and wait up to ``timeout`` s for the queued ones."""
        ...


@dataclass
class _Write:
    kind: Literal["state", "history"]
    key: str
    document: dict[str, Any]
    on_error: ErrorCallback | None = None
    seq: int = 0


class _Applier:
    """Applies one write to a store, and reports it if it fails."""

    def __init__(self, store: StateStore, log: logging.Logger | None) -> None:
        self.store = store
        self.log = log or logger
        self.failures = 0
        self.state_failures = 0
        self.dropped = 0

    def _apply(self, write: _Write) -> None:
        try:
            if write.kind == "state":
                self.store.write_state(write.key, write.document)
            else:
                self.store.append_history(write.key, write.document)
        except Exception as error:  # one failed write must not stop the next
            self.failures += 1
            self.state_failures += write.kind == "state"
            self._report(write, error)

    def _report(self, write: _Write, error: Exception) -> None:
        """Hand ``error`` to the write's ``on_error``, or else log it."""
        if write.on_error is None:
            self.log.warning(
                "store write not done: %s of %s (%d failed, %d dropped so far): %s: %s",
                write.kind,
                write.key,
                self.failures,
                self.dropped,
                type(error).__name__,
                error,
            )
            return
        try:
            write.on_error(error)
        except Exception:  # a broken callback must not stop the writer either
            self.log.exception("reporting a failed %s write failed", write.kind)


class SynchronousWriter(_Applier):
    """A :class:`StoreWriter` that writes at once, on the caller's thread."""

    def write_state(self, key: str, state: Mapping[str, Any]) -> None:
        """Replace the state document under ``key`` now."""
        self._apply(_Write("state", key, dict(state)))

    def append_history(
        self,
        key: str,
        entry: Mapping[str, Any],
        on_error: ErrorCallback | None = None,
    ) -> None:
        """Append ``entry`` under ``key`` now."""
        self._apply(_Write("history", key, dict(entry), on_error))

    def flush(self, timeout: float) -> bool:
        """Every write is done already."""
        return True

    def close(self, timeout: float) -> bool:
        """Nothing is pending."""
        return True


class BackgroundWriter(_Applier):
    """A :class:`StoreWriter` that applies writes in order on one daemon thread.

    Submitting never waits on the store: it copies the document and queues it.
    Safe to call from any thread.
    """

    def __init__(
        self,
        store: StateStore,
        *,
        max_pending: int = DEFAULT_MAX_PENDING,
        log: logging.Logger | None = None,
        name: str = "rayfleet store writer",
    ) -> None:
        """``log`` gets the warnings; ``max_pending`` bounds the history appends
        waiting at once (see the module's docstring)."""
        super().__init__(store, log)
        self.max_pending = max_pending
        self._changed = threading.Condition()
        self._queue: deque[_Write] = deque()
        self._queued_states: dict[str, _Write] = {}
        self._queued_history = 0
        self._submitted = 0  # seq of the last write queued
        self._done = 0  # seq of the last write applied or failed
        self._closed = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    @property
    def pending(self) -> int:
        """Writes queued or in progress."""
        with self._changed:
            return self._submitted - self._done

    def write_state(self, key: str, state: Mapping[str, Any]) -> None:
        """Queue a save of ``state`` under ``key``, replacing one still queued."""
        write = _Write("state", key, copy.deepcopy(dict(state)))
        with self._changed:
            if not self._closed:
                queued = self._queued_states.get(key)
                if queued is not None:
                    queued.document = write.document
                else:
                    self._queued_states[key] = self._queue_write(write)
                return
        self._refuse(write, "the writer is closed")

    def append_history(
        self,
        key: str,
        entry: Mapping[str, Any],
        on_error: ErrorCallback | None = None,
    ) -> None:
        """Queue ``entry`` for appending under ``key``, or drop it if the queue is
        full (``on_error`` hears of a drop as of a failure)."""
        write = _Write("history", key, copy.deepcopy(dict(entry)), on_error)
        with self._changed:
            if self._closed:
                reason = "the writer is closed"
            elif self._queued_history >= self.max_pending:
                reason = f"{self._queued_history} history entries already wait"
            else:
                self._queued_history += 1
                self._queue_write(write)
                return
        self._refuse(write, reason)

    def flush(self, timeout: float) -> bool:
        """Wait up to ``timeout`` s for the writes submitted before this call to be
        done (applied or failed); whether they all are."""
        with self._changed:
            target = self._submitted
            return self._changed.wait_for(lambda: self._done >= target, timeout)

    def close(self, timeout: float) -> bool:
        """Refuse new writes, and wait up to ``timeout`` s for the queued ones.

        Answers whether all were done; any left go on in the background for as
        long as the process lives. Calling it again is harmless.
        """
        with self._changed:
            self._closed = True
            self._changed.notify_all()
        self._thread.join(timeout)
        if self._thread.is_alive():
            self.log.warning(
                "store writer closed with %d writes still pending", self.pending
            )
            return False
        return True

    def _queue_write(self, write: _Write) -> _Write:
        # Called holding the lock.
        self._submitted += 1
        write.seq = self._submitted
        self._queue.append(write)
        self._changed.notify_all()
        return write

    def _refuse(self, write: _Write, reason: str) -> None:
        with self._changed:
            self.dropped += 1
        self._report(write, StoreError(f"dropped: {reason}"))

    def _run(self) -> None:
        while True:
            with self._changed:
                while not self._queue:
                    if self._closed:
                        return
                    self._changed.wait()
                write = self._queue.popleft()
                if write.kind == "state":
                    # Started: a later save of this key must queue after it.
                    del self._queued_states[write.key]
            self._apply(write)
            with self._changed:
                if write.kind == "history":
                    self._queued_history -= 1
                self._done = write.seq
                self._changed.notify_all()
