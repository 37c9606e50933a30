"""A uniform random sample of a stream, bounded in size and mergeable.

Bottom-k sampling: every item gets an independent uniform priority and the sample
keeps the ``capacity`` items of smallest priority. That is a uniform sample without
replacement of everything offered, and the union of two such samples, cut back to
the ``capacity`` smallest priorities, is exactly the sample of the two streams
together, which is what merging time buckets needs. (Classic reservoir sampling,
Vitter's algorithm R, is uniform too but does not merge exactly.)
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

import numpy as np

__all__ = ["Reservoir"]

T = TypeVar("T")


class Reservoir(Generic[T]):
    """At most ``capacity`` items, a uniform sample of those offered.

    The caller draws each item's priority (``random.random()``), so one draw can
    serve several reservoirs sampling the same requests; priorities must be
    independent across items and across the reservoirs that will be merged.
    """

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be positive: {capacity}")
        self.capacity = capacity
        self.seen = 0
        # A max-heap on priority via negation; the counter breaks ties so items
        # (numpy arrays, say) are never compared.
        self._heap: list[tuple[float, int, T]] = []
        # A plain int, not itertools.count: routers pickle reservoirs to the
        # Validator, and counters stop pickling in Python 3.14.
        self._counter = 0

    def __len__(self) -> int:
        return len(self._heap)

    def __iter__(self) -> Iterator[T]:
        return (item for _, _, item in self._heap)

    @property
    def threshold(self) -> float:
        """Items of priority at or above this are not kept; check before building
        an expensive item."""
        if len(self._heap) < self.capacity:
            return float("inf")
        return -self._heap[0][0]

    def add(self, priority: float, item: T) -> None:
        """Offer one item with its priority in [0, 1)."""
        self.seen += 1
        self._offer(-priority, item)

    def add_many(self, priorities: np.ndarray, item: Callable[[int], T]) -> None:
        """Offer ``len(priorities)`` items at once: item ``i`` has priority
        ``priorities[i]`` and is built by ``item(i)``, only if the sample keeps it.

        The sample :meth:`add` would hold after offering them one by one: only
        the ``capacity`` smallest priorities below the current threshold can
        stay, so at most that many are built and offered.
        """
        self.seen += len(priorities)
        candidates = np.flatnonzero(priorities < self.threshold)
        if len(candidates) > self.capacity:
            smallest = np.argpartition(priorities[candidates], self.capacity - 1)
            candidates = candidates[smallest[: self.capacity]]
        if not candidates.size:
            return
        first = self._counter + 1
        self._counter += len(candidates)
        heap = self._heap + [
            (-priority, first + n, item(index))
            for n, (index, priority) in enumerate(
                zip(candidates.tolist(), priorities[candidates].tolist(), strict=True)
            )
        ]
        if len(heap) > self.capacity:
            # Largest negated priority first: the smallest priorities stay.
            heap.sort(reverse=True)
            del heap[self.capacity :]
        heapq.heapify(heap)
        self._heap = heap

    def merge(self, other: Reservoir[T]) -> None:
        """Make this the sample of both streams (``other`` is unchanged)."""
        self.seen += other.seen
        # Each of other's kept items offered in turn: the same smallest
        # priorities as pooling both and cutting back, and once this one is full
        # most are turned away at a glance (the Validator merges a router's
        # samples into its buckets every flush). A copy: merging a reservoir
        # into itself must not walk a changing heap.
        for negated, _, item in list(other._heap):
            self._offer(negated, item)

    def _offer(self, negated: float, item: T) -> None:
        """Keep ``item`` (of priority ``-negated``) if it is among the smallest."""
        if len(self._heap) < self.capacity:
            self._counter += 1
            heapq.heappush(self._heap, (negated, self._counter, item))
        elif negated > self._heap[0][0]:
            self._counter += 1
            heapq.heapreplace(self._heap, (negated, self._counter, item))

    def clear(self) -> None:
        """Drop the kept items; ``seen`` still counts what was offered."""
        self._heap = []
