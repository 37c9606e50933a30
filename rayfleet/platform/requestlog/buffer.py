"""The router's bounded buffer of logged requests, bounded by bytes.

A logged request keeps its tensors until they are written, so the bound is on
their bytes, not on a count: one image request weighs as much as thousands of
tabular ones. The bytes of a request stay counted from the moment it is taken in
until its part is written (or refused), so what waits and what is being written
share one bound. A request that would go over it is dropped and counted, never
waited for.

Not thread-safe: :class:`~rayfleet.platform.requestlog.writer.RequestLog` holds
its lock around every call.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

__all__ = ["LogBuffer", "LoggedRequest", "tensor_bytes"]


@dataclass(frozen=True, slots=True)
class LoggedRequest:
    """One request the log keeps, as the router served it.

    ``time`` is the unix time in seconds it was answered; ``rows`` the size of
    its batch dimension, shared by every input and output; ``nbytes`` what its
    tensors hold (:func:`tensor_bytes`). ``outputs`` is ``None`` for a request
    that failed after its inputs were checked (a 5xx).
    """

    request_id: str
    time: float
    model: str
    version: str
    status: int
    latency_ms: float
    model_ms: float
    inputs: Mapping[str, np.ndarray]
    outputs: Mapping[str, np.ndarray] | None
    shadow_of: str | None
    rows: int
    nbytes: int


def tensor_bytes(arrays: Mapping[str, np.ndarray]) -> int:
    """Bytes the arrays hold; for BYTES (object) arrays, their elements' too."""
    total = 0
    for array in arrays.values():
        total += array.nbytes
        if array.dtype.kind == "O":
            total += sum(len(item) for item in array.flat if item is not None)
    return total


class LogBuffer:
    """Logged requests waiting to be written, at most ``max_bytes`` with the ones
    being written."""

    def __init__(self, max_bytes: int) -> None:
        if max_bytes < 1:
            raise ValueError(f"max_bytes must be positive: {max_bytes}")
        self.max_bytes = max_bytes
        self.held_bytes = 0
        self.waiting_bytes = 0
        self.waiting_rows = 0
        # Rows of requests refused because the bound was reached.
        self.dropped_rows = 0
        self._waiting: deque[LoggedRequest] = deque()

    def __len__(self) -> int:
        return len(self._waiting)

    def offer(self, entry: LoggedRequest) -> bool:
        """Keep ``entry``, or drop and count its rows when it would take the
        bytes held over the bound."""
        if self.held_bytes + entry.nbytes > self.max_bytes:
            self.dropped_rows += entry.rows
            return False
        self._waiting.append(entry)
        self.held_bytes += entry.nbytes
        self.waiting_bytes += entry.nbytes
        self.waiting_rows += entry.rows
        return True

    def take(self) -> list[LoggedRequest]:
        """Every waiting request, oldest first; their bytes stay held until
        :meth:`release`."""
        taken = list(self._waiting)
        self._waiting.clear()
        self.waiting_bytes = 0
        self.waiting_rows = 0
        return taken

    def release(self, nbytes: int) -> None:
        """Free ``nbytes`` of taken requests, once their part is done with."""
        self.held_bytes -= nbytes
