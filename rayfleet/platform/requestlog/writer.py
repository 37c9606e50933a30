"""The router's request log: sample, buffer, and write parts on a thread.

:meth:`RequestLog.record` runs on the router's event loop, after a request was
answered: it decides by the request id (:class:`~.sampling.Sampler`), and a kept
request joins the :class:`~.buffer.LogBuffer` as the arrays the router already
holds, without a copy or an encoding. One daemon thread does the rest, never on
the event loop: every ``flush_every_s``, or sooner once ``flush_max_rows`` rows or
half the byte bound wait, it takes what waits, turns each version's requests into
an Arrow table per UTC day (:class:`~.table.LogLayout`) and writes it through a
:class:`PartSink` (the store's own filesystem in production, so ``s3://`` works as
a folder does).

Nothing here ever raises into a request. A request over the byte bound is dropped;
a part the store refuses is logged (its version, size and the error, never its
rows) and its rows dropped; a request whose tensors share no batch dimension is
dropped: each counted by reason in :class:`RequestLogCounts`, which the router
sends to the Validator for ``/metrics``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from typing import Any, Protocol

import numpy as np
import pyarrow as pa

from rayfleet.platform.config.signature import Signature
from rayfleet.platform.config.spec import RequestLogSpec
from rayfleet.platform.config.store import ModelStore
from rayfleet.platform.errors import ConfigError
from rayfleet.platform.requestlog.buffer import LogBuffer, LoggedRequest, tensor_bytes
from rayfleet.platform.requestlog.files import day_folder, part_name, write_part
from rayfleet.platform.requestlog.sampling import Sampler
from rayfleet.platform.requestlog.table import LogLayout

__all__ = [
    "DROP_REASONS",
    "PART_MAX_BYTES",
    "PartSink",
    "RequestLog",
    "RequestLogCounts",
    "StoreSink",
]

logger = logging.getLogger(__name__)

# Why rows are dropped: the byte bound was reached ("full"), the store refused
# their part ("store"), or the request's tensors share no batch dimension to cut
# rows along ("shape").
DROP_REASONS = ("full", "store", "shape")
# Tensor bytes per part at most: a flush of a large buffer is cut into parts, so
# that one part's Arrow copy stays small beside the buffer, and a list column's
# 32-bit offsets never overflow.
PART_MAX_BYTES = 256 * 1024 * 1024


@dataclass(frozen=True)
class RequestLogCounts:
    """A router's request-log totals since it started: rows written, parts the
    store refused, and rows dropped by reason (:data:`DROP_REASONS`)."""

    rows: int = 0
    write_failures: int = 0
    dropped: Mapping[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Plain data, to cross a process boundary."""
        return {
            "rows": self.rows,
            "write_failures": self.write_failures,
            "dropped": dict(self.dropped),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RequestLogCounts:
        """The counts :meth:`to_dict` wrote."""
        return cls(
            rows=int(data.get("rows", 0)),
            write_failures=int(data.get("write_failures", 0)),
            dropped={str(k): int(v) for k, v in data.get("dropped", {}).items()},
        )


class PartSink(Protocol):
    """Where the parts of the request log go."""

    def write(
        self, model: str, version: str, day: date, name: str, table: pa.Table
    ) -> None:
        """Store ``table`` as part ``name`` of ``model``/``version``'s ``day``."""
        ...


class StoreSink:
    """Parts into the model store: ``_logs/{model}/{version}/date={day}/``."""

    def __init__(self, store: ModelStore) -> None:
        self.store = store

    def write(
        self, model: str, version: str, day: date, name: str, table: pa.Table
    ) -> None:
        """Write the part through the store's filesystem."""
        folder = self.store.request_log(model, version).child(day_folder(day))
        write_part(folder, name, table)


class RequestLog:
    """One router's sampled, buffered, bounded log of the requests it served.

    ``signatures`` holds each logged version's signature by ``(model, version)``;
    a version whose tensors cannot be named in the log is left out with a
    warning. ``writer`` names this router in part names. The thread starts at
    once; :meth:`close` flushes and stops it.
    """

    def __init__(
        self,
        spec: RequestLogSpec,
        signatures: Mapping[tuple[str, str], Signature],
        sink: PartSink,
        writer: str,
        *,
        clock: Callable[[], float] = time.time,
        log: logging.Logger | None = None,
    ) -> None:
        self.spec = spec
        self.sink = sink
        self.writer = writer
        self.clock = clock
        self.log = log or logger
        self.sampler = Sampler(spec.sample_rate)
        self.layouts: dict[tuple[str, str], LogLayout] = {}
        for key, signature in signatures.items():
            try:
                self.layouts[key] = LogLayout.of(signature)
            except ConfigError as error:
                self.log.warning("request log: %s/%s not logged: %s", *key, error)
        self._buffer = LogBuffer(spec.max_buffer_bytes)
        self._changed = threading.Condition()
        self._rows = 0
        self._write_failures = 0
        self._dropped_store = 0
        self._dropped_shape = 0
        self._accepted = 0  # requests taken into the buffer
        self._settled = 0  # of those, written or given up
        self._flush_now = False
        self._closed = False
        self._last_name = ""
        self._thread = threading.Thread(
            target=self._run, name="rayfleet request log", daemon=True
        )
        self._thread.start()

    # -- the request path ----------------------------------------------------

    def record(
        self,
        request_id: str,
        model: str,
        version: str,
        status: int,
        latency_ms: float,
        model_ms: float,
        inputs: Mapping[str, np.ndarray],
        outputs: Mapping[str, np.ndarray] | None,
        shadow_of: str | None = None,
    ) -> None:
        """Log a served request if its id is sampled; never blocks, never raises
        for the log's sake. ``outputs`` is ``None`` for a request that failed."""
        if not self.sampler(request_id):
            return
        layout = self.layouts.get((model, version))
        if layout is None:
            return
        rows = layout.rows_of(inputs, outputs)
        if rows is None:
            with self._changed:
                self._dropped_shape += 1
            return
        if rows == 0:
            return
        nbytes = tensor_bytes(inputs) + (
            0 if outputs is None else tensor_bytes(outputs)
        )
        entry = LoggedRequest(
            request_id=request_id,
            time=self.clock(),
            model=model,
            version=version,
            status=status,
            latency_ms=latency_ms,
            model_ms=model_ms,
            inputs=inputs,
            outputs=outputs,
            shadow_of=shadow_of,
            rows=rows,
            nbytes=nbytes,
        )
        with self._changed:
            # After close the thread may be gone: nothing would write it.
            if self._closed or not self._buffer.offer(entry):
                return
            self._accepted += 1
            if self._due():
                self._changed.notify_all()

    # -- counters and control -----------------------------------------------

    def counts(self) -> RequestLogCounts:
        """The totals so far."""
        with self._changed:
            return RequestLogCounts(
                rows=self._rows,
                write_failures=self._write_failures,
                dropped={
                    "full": self._buffer.dropped_rows,
                    "store": self._dropped_store,
                    "shape": self._dropped_shape,
                },
            )

    @property
    def held_bytes(self) -> int:
        """Tensor bytes waiting or being written."""
        with self._changed:
            return self._buffer.held_bytes

    def flush(self, timeout: float) -> bool:
        """Write what waits now, and wait up to ``timeout`` s until every request
        taken in before this call is written or given up; whether it is."""
        with self._changed:
            target = self._accepted
            self._flush_now = True
            self._changed.notify_all()
            return self._changed.wait_for(lambda: self._settled >= target, timeout)

    def close(self, timeout: float) -> bool:
        """Take no more requests, write what waits, and stop the thread; whether
        it stopped within ``timeout`` s. Calling it again is harmless."""
        with self._changed:
            self._closed = True
            self._changed.notify_all()
        self._thread.join(timeout)
        return not self._thread.is_alive()

    # -- the writer thread ---------------------------------------------------

    def _due(self) -> bool:
        # Called holding the lock.
        buffer = self._buffer
        return bool(
            self._flush_now
            or self._closed
            or buffer.waiting_rows >= self.spec.flush_max_rows
            or 2 * buffer.waiting_bytes >= buffer.max_bytes
        )

    def _run(self) -> None:
        every = self.spec.flush_every_s
        deadline = time.monotonic() + every
        while True:
            with self._changed:
                while not self._due():
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    self._changed.wait(left)
                entries = self._buffer.take()
                self._flush_now = False
                closing = self._closed
            deadline = time.monotonic() + every
            if entries:
                self._write(entries)
            if closing:
                with self._changed:
                    if not len(self._buffer):
                        return

    def _write(self, entries: Sequence[LoggedRequest]) -> None:
        """Write taken requests as parts, one version and day at a time."""
        groups: dict[tuple[str, str, date], list[LoggedRequest]] = defaultdict(list)
        for entry in entries:
            day = datetime.fromtimestamp(entry.time, timezone.utc).date()
            groups[(entry.model, entry.version, day)].append(entry)
        for (model, version, day), group in groups.items():
            for part in _parts(group, PART_MAX_BYTES):
                self._write_part(model, version, day, part)

    def _write_part(
        self, model: str, version: str, day: date, part: Sequence[LoggedRequest]
    ) -> None:
        rows = sum(entry.rows for entry in part)
        try:
            table = self.layouts[(model, version)].to_table(part)
            self.sink.write(model, version, day, self._next_name(), table)
        except Exception as error:  # the store's, or a tensor Arrow refuses
            with self._changed:
                self._write_failures += 1
                self._dropped_store += rows
                failures = self._write_failures
            self.log.warning(
                "request log: a part of %d rows of %s/%s for %s was not written "
                "(%d failed so far): %s: %s",
                rows,
                model,
                version,
                day,
                failures,
                type(error).__name__,
                str(error)[:300],
            )
        else:
            with self._changed:
                self._rows += rows
        finally:
            with self._changed:
                self._buffer.release(sum(entry.nbytes for entry in part))
                self._settled += len(part)
                self._changed.notify_all()

    def _next_name(self) -> str:
        """A part name later than the last, even within one microsecond."""
        now = datetime.fromtimestamp(self.clock(), timezone.utc)
        name = part_name(now, self.writer)
        while name <= self._last_name:
            now += timedelta(microseconds=1)
            name = part_name(now, self.writer)
        self._last_name = name
        return name


def _parts(
    entries: Sequence[LoggedRequest], max_bytes: int
) -> list[list[LoggedRequest]]:
    """``entries`` cut, in order, into runs of at most ``max_bytes`` (a larger
    request is a part of its own)."""
    parts: list[list[LoggedRequest]] = [[]]
    size = 0
    for entry in entries:
        if parts[-1] and size + entry.nbytes > max_bytes:
            parts.append([])
            size = 0
        parts[-1].append(entry)
        size += entry.nbytes
    return parts
