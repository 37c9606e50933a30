"""The router's bounded buffer of observations, drained in batches.

Recording never waits and never grows without bound: when the Validator is slow or
down and the buffer is full, new observations are dropped and counted, and
serving goes on.
"""

from __future__ import annotations

from collections import deque

from rayfleet.platform.validation.observation import Observation, ObservationRow

__all__ = ["ObservationBuffer"]


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
