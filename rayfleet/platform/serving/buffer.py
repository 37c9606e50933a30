"""A bounded buffer of observations, drained in batches: the router's shadow-pair
rows, which the Validator matches one by one (:mod:`.aggregate` sums up the rest).

Recording never waits and never grows without bound: when the Validator is slow or
down and the buffer is full, new observations are dropped and counted, and
serving goes on. :class:`DropReport` says so in the router's log, one line per
burst of drops at most every so often, however many requests a flood drops.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable

from rayfleet.platform.events_log import OBSERVATIONS_DROPPED, EventLog
from rayfleet.platform.validation.observation import Observation, ObservationRow

__all__ = ["DropReport", "ObservationBuffer"]


class ObservationBuffer:
    """At most ``capacity`` observations, oldest first."""

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be positive: {capacity}")
        self.capacity = capacity
        self.dropped = 0
        self._rows: deque[ObservationRow] = deque()

    def __len__(self) -> int:
        return len(self._rows)

    def record(self, observation: Observation) -> None:
        """Keep ``observation``, or drop and count it when the buffer is full."""
        if len(self._rows) >= self.capacity:
            self.dropped += 1
            return
        self._rows.append(observation.to_row())

    def drain(self, limit: int) -> list[ObservationRow]:
        """Take up to ``limit`` of the oldest observations out of the buffer."""
        count = min(limit, len(self._rows))
        return [self._rows.popleft() for _ in range(count)]

    def lose(self, count: int) -> None:
        """Count ``count`` drained observations that could not be delivered."""
        self.dropped += count


class DropReport:
    """Writes one :data:`~rayfleet.platform.events_log.OBSERVATIONS_DROPPED` line
    per burst of dropped observations, and at most one every ``every_s`` seconds.

    The router's flush loop passes its running count of lost observations to
    :meth:`update` each time round; the request path never pays for it. A line
    says how many were dropped since the last one (``dropped``), over how many
    seconds (``interval_s``: from the last moment every drop had been reported,
    seen to the loop's period), and the count since the router started
    (``total``). Drops that come within ``every_s`` of a line wait for the next.
    One report per router replica, hence per process.
    """

    def __init__(
        self,
        log: EventLog,
        router: str,
        every_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.log = log
        self.router = router
        self.every_s = every_s
        self._clock = clock
        self._reported = 0
        # When every drop counted so far had been reported.
        self._clean_at = clock()
        self._last_line: float | None = None

    def update(self, total: int) -> bool:
        """Take the running count ``total``; True when a line was written."""
        now = self._clock()
        if total <= self._reported:
            self._clean_at = now
            return False
        if self._last_line is not None and now - self._last_line < self.every_s:
            return False
        self.log.write(
            OBSERVATIONS_DROPPED,
            {
                "router": self.router,
                "dropped": total - self._reported,
                "interval_s": round(now - self._clean_at, 3),
                "total": total,
            },
            logging.WARNING,
        )
        self._reported = total
        self._clean_at = self._last_line = now
        return True
