"""Latency quantiles with bounded relative error: a thin wrapper over DDSketch.

DDSketch (Masson, Rim, Lee, VLDB 2019; the ``ddsketch`` package) keeps counts in
logarithmic bins, so any quantile it answers is within ``relative_accuracy`` of the
true one (1%: a true p99 of 200 ms reads between 198 and 202 ms), whatever the
distribution, and two sketches merge by adding bins: the merge of per-bucket or
per-replica sketches is the sketch of all their values.

Memory is bounded whatever the traffic: the bins cover a value range, not a count,
and at most ``bin_limit`` are kept. Past that the lowest bins collapse into one,
which costs accuracy on the fastest requests only, never on p50 or p99 unless the
values span more than about 2048 bins (18 orders of magnitude at 1%).
"""

from __future__ import annotations

import math
from typing import Any, cast

import numpy as np
from ddsketch import LogCollapsingLowestDenseDDSketch
from ddsketch.store import CollapsingLowestDenseStore

__all__ = ["LatencySketch"]


class _Sketch(LogCollapsingLowestDenseDDSketch):
    """DDSketch with access to its own bins, to write and read the compact form."""

    def stores(self) -> tuple[CollapsingLowestDenseStore, CollapsingLowestDenseStore]:
        return (
            cast(CollapsingLowestDenseStore, self._store),
            cast(CollapsingLowestDenseStore, self._negative_store),
        )

    def export(self) -> dict[str, Any]:
        positive, negative = self.stores()
        return {
            "zero": self._zero_count,
            "sum": self._sum,
            "min": self._min if self._count else None,
            "max": self._max if self._count else None,
            "positive": _export_store(positive),
            "negative": _export_store(negative),
        }

    def restore(self, state: dict[str, Any]) -> None:
        positive, negative = self.stores()
        _restore_store(positive, state["positive"])
        _restore_store(negative, state["negative"])
        self._zero_count = float(state["zero"])
        self._count = positive.count + negative.count + self._zero_count
        self._sum = float(state["sum"])
        if self._count:
            self._min = float(state["min"])
            self._max = float(state["max"])

    def add_values(self, values: np.ndarray) -> None:
        """Add each of ``values`` (float64, finite, not negative) as :meth:`add`
        would, with the keys computed in one numpy pass.

        numpy's logarithm may differ from ``math.log`` in the last bit, which
        moves a value lying on a bin's edge into its neighbour: still within the
        relative accuracy, and :meth:`rank_bounds` allows for it.
        """
        mapping = self._mapping
        positive = values[values > mapping.min_possible]
        if positive.size:
            keys = np.ceil(np.log2(positive) * mapping._multiplier) + mapping._offset
            unique, counts = np.unique(keys.astype(np.int64), return_counts=True)
            store, _ = self.stores()
            # The lowest and highest key first, as in _restore_store: the dense
            # store then grows once.
            order = [0, len(unique) - 1, *range(1, len(unique) - 1)]
            for index in order[: len(unique)]:
                store.add(int(unique[index]), float(counts[index]))
        self._zero_count += values.size - positive.size
        self._count += values.size
        self._sum += float(values.sum())
        self._min = min(self._min, float(values.min()))
        self._max = max(self._max, float(values.max()))

    def rank_bounds(self, rank: int) -> tuple[float, float]:
        """Bounds on the ``rank``-th smallest value added (1-based).

        Bin ``k`` holds the values in ``(gamma^(k-1), gamma^k]``, which are
        ``value(k) / (1 + a)`` and ``value(k) / (1 - a)`` for relative accuracy
        ``a``; the collapsed lowest bin holds everything down to the exact
        minimum. The edges are widened by 1e-9 for the rounding of the logarithm
        that placed a value near one, and clipped to the exact minimum and maximum.
        """
        positive, _ = self.stores()
        if not 1 <= rank <= self._count:
            raise ValueError(f"rank must be in [1, {int(self._count)}]: {rank}")
        if rank <= self._zero_count:
            return 0.0, min(self._mapping.min_possible, self._max)
        remaining, running = rank - self._zero_count, 0.0
        key = positive.max_key
        for index, count in enumerate(positive.bins):
            running += count
            if running >= remaining:
                key = index + positive.offset
                break
        value, accuracy = self._mapping.value(key), self._mapping.relative_accuracy
        low = value / (1 + accuracy) * (1 - 1e-9)
        high = value / (1 - accuracy) * (1 + 1e-9)
        if positive.is_collapsed and key == positive.min_key:
            low = self._min
        return max(low, self._min), min(high, self._max)


def _export_store(store: CollapsingLowestDenseStore) -> dict[str, Any]:
    if store.count == 0:
        return {"first": 0, "counts": [], "collapsed": False}
    start = store.min_key - store.offset
    counts = store.bins[start : start + store.max_key - store.min_key + 1]
    return {
        "first": store.min_key,
        # Counts are whole numbers unless someone added weights; ints keep the
        # JSON short.
        "counts": [int(c) if float(c).is_integer() else c for c in counts],
        "collapsed": store.is_collapsed,
    }


def _restore_store(store: CollapsingLowestDenseStore, state: dict[str, Any]) -> None:
    counts = state["counts"]
    used = [offset for offset, count in enumerate(counts) if count]
    # The lowest key, then the highest, size and place the bins once; every key
    # between then fits. (The dense store shifts its bins for each key below its
    # lowest so far: top-down, that was a shift per bin, on every summary a
    # router sends.)
    order = used[:1] + used[-1:] + used[1:-1] if len(used) > 1 else used
    for offset in order:
        store.add(state["first"] + offset, float(counts[offset]))
    store.is_collapsed = bool(state["collapsed"])


class LatencySketch:
    """A mergeable quantile sketch of non-negative values, e.g. latencies in ms.

    ``quantile(q)`` is within ``relative_accuracy`` of the value of rank
    ``floor(q * (count - 1))`` among the values added (numpy's ``method="lower"``).
    """

    def __init__(self, relative_accuracy: float = 0.01, bin_limit: int = 2048) -> None:
        if not 0 < relative_accuracy < 1:
            raise ValueError(
                f"relative_accuracy must be in (0, 1): {relative_accuracy}"
            )
        if bin_limit < 1:
            raise ValueError(f"bin_limit must be positive: {bin_limit}")
        self.relative_accuracy = relative_accuracy
        self.bin_limit = bin_limit
        self._sketch = _Sketch(relative_accuracy, bin_limit)

    def __repr__(self) -> str:
        return (
            f"LatencySketch(count={self.count}, p50={self.quantile(0.5)}, "
            f"p99={self.quantile(0.99)})"
        )

    @property
    def count(self) -> int:
        """How many values were added."""
        return int(self._sketch.count)

    @property
    def sum(self) -> float:
        """The exact sum of the values added."""
        return float(self._sketch.sum)

    @property
    def mean(self) -> float | None:
        """The exact mean of the values added, ``None`` when empty."""
        return self.sum / self.count if self.count else None

    def add(self, value: float) -> None:
        """Add one value; it must be finite and not negative."""
        if not (math.isfinite(value) and value >= 0):
            raise ValueError(f"a latency must be finite and >= 0: {value}")
        self._sketch.add(value)

    def add_many(self, values: np.ndarray) -> None:
        """Add every value of a float64 array; each must be finite and not
        negative. The sketch :meth:`add` would make, in a few numpy passes."""
        if values.size == 0:
            return
        if not (np.isfinite(values).all() and (values >= 0).all()):
            raise ValueError("latencies must be finite and >= 0")
        self._sketch.add_values(values)

    def merge(self, other: LatencySketch) -> None:
        """Add every value of ``other`` to this sketch (``other`` is unchanged)."""
        if other.relative_accuracy != self.relative_accuracy:
            raise ValueError(
                "cannot merge sketches of different relative accuracy: "
                f"{self.relative_accuracy} and {other.relative_accuracy}"
            )
        self._sketch.merge(other._sketch)

    def quantile(self, q: float) -> float | None:
        """The approximate ``q``-quantile, ``0 <= q <= 1``; ``None`` when empty."""
        if not 0 <= q <= 1:
            raise ValueError(f"q must be in [0, 1]: {q}")
        value = self._sketch.get_quantile_value(q)
        return None if value is None else float(value)

    def rank_bounds(self, rank: int) -> tuple[float, float]:
        """Bounds on the ``rank``-th smallest value added, ``1 <= rank <= count``.

        The value lies in the interval whatever it was: the sketch keeps it to
        within ``relative_accuracy``, and its exact minimum and maximum clip that.
        What the rollout's confidence bounds on quantiles read
        (:mod:`rayfleet.platform.rollout.quantile_bounds`).
        """
        return self._sketch.rank_bounds(rank)

    def copy(self) -> LatencySketch:
        """An independent sketch with the same values."""
        twin = LatencySketch(self.relative_accuracy, self.bin_limit)
        twin.merge(self)
        return twin

    def __getstate__(self) -> dict[str, Any]:
        # Pickled as the compact form: routers send sketches every flush, and
        # the library's objects pickle every allocated bin and the mapping.
        return self.to_dict()

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(LatencySketch.from_dict(state).__dict__)

    def to_dict(self) -> dict[str, Any]:
        """A compact JSON-safe form: parameters, exact sum and range, used bins."""
        return {
            "relative_accuracy": self.relative_accuracy,
            "bin_limit": self.bin_limit,
            **self._sketch.export(),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LatencySketch:
        """The sketch :meth:`to_dict` wrote ``data`` from."""
        sketch = cls(float(data["relative_accuracy"]), int(data["bin_limit"]))
        sketch._sketch.restore(data)
        return sketch
