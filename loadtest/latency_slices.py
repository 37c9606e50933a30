"""Latency recorded on real Serve, slice by slice, and drawn again for simulations.

``loadtest/rollout_trials.py --record`` polls the Validator's
``/-/validation?sketches=true`` once per evaluation interval; a
:class:`Recorder` turns the answers into slices (:class:`Slice`: each version's
requests of one interval with their end-to-end and model-time sketch bins), and
:func:`save_run` merges a trial's slices into one JSON file.
``loadtest/sim_rollout.py`` reads them back (:func:`read_recording`) and a
:class:`SliceSampler` replays them. The file::

    {"format": 1, "relative_accuracy": 0.01,
     "loads": {"closed64": {"good": [            runs, oldest first
         {"recorded": "2025-01-01T00:00:00Z", "version": "v2", "rps": 312.4,
          "slices": [{"seconds": 5.01, "weight": 5.0,
                      "stable": {"requests": 1480,
                                 "e2e": {"zero": 0, "first": 112, "counts": [...]},
                                 "model": {...}},
                      "canary": {...}}, ...]}]}}}

A sketch is kept as its bins only (``LatencySketch.to_dict``'s positive store and
zero count): bin ``k`` holds the values in ``(gamma^(k-1), gamma^k]``, ``gamma =
(1 + a) / (1 - a)`` for relative accuracy ``a``. Latencies never span the 2048
bins (18 orders of magnitude at 1%) after which a sketch collapses its lowest.
"""

from __future__ import annotations

import copy
import json
import os
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "DEFAULT_PATH",
    "FORMAT",
    "MAX_RUNS",
    "Bins",
    "Recorder",
    "Recording",
    "Run",
    "Side",
    "Slice",
    "SliceSampler",
    "read_recording",
    "save_run",
]

DEFAULT_PATH = Path(__file__).resolve().parent / "data" / "latency_slices.json"
FORMAT = 1
# Runs kept per load and canary, newest last: a run is about 50 KB at 300
# requests/s, so the file stays a few MB at most, and ten runs already hold
# several hundred slices to draw from.
MAX_RUNS = 10


@dataclass(frozen=True)
class Bins:
    """A sketch's counts: ``zero`` values of 0, then ``counts[i]`` in bin
    ``first + i`` (see the module docstring for a bin's bounds)."""

    zero: int = 0
    first: int = 0
    counts: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if self.zero < 0 or any(c < 0 for c in self.counts):
            raise ValueError(f"bin counts must be >= 0: {self}")

    @property
    def count(self) -> int:
        """How many values the bins hold."""
        return self.zero + sum(self.counts)

    @classmethod
    def of_sketch(cls, sketch: Mapping[str, Any]) -> Bins:
        """The bins of a ``LatencySketch.to_dict()``; latencies are never negative."""
        store = sketch["positive"]
        counts = [round(c) for c in store["counts"]]
        # Trimmed, so that an empty sketch has one form whatever its store says.
        while counts and not counts[-1]:
            counts.pop()
        skipped = next((i for i, c in enumerate(counts) if c), len(counts))
        first = store["first"] + skipped if counts else 0
        return cls(round(sketch["zero"]), first, tuple(counts[skipped:]))

    def minus(self, earlier: Bins) -> Bins:
        """The values added since ``earlier``, a sketch this one grew from.

        Raises ValueError when ``earlier`` holds a value this one lacks.
        """
        if not earlier.count:
            return self
        if not self.count:
            raise ValueError(f"the bins shrank from {earlier.count} values to none")
        low = min(self.first, earlier.first)
        high = max(self.first + len(self.counts), earlier.first + len(earlier.counts))
        now, before = np.zeros(high - low, np.int64), np.zeros(high - low, np.int64)
        now[self.first - low : self.first - low + len(self.counts)] = self.counts
        start = earlier.first - low
        before[start : start + len(earlier.counts)] = earlier.counts
        diff = now - before
        if diff.min() < 0 or self.zero < earlier.zero:
            raise ValueError("the bins shrank: they are not a later state of earlier")
        return Bins.of_sketch(
            {
                "zero": self.zero - earlier.zero,
                "positive": {"first": low, "counts": diff.tolist()},
            }
        )

    def plus(self, other: Bins) -> Bins:
        """The bins of both: every value of either."""
        if not other.count:
            return self
        if not self.count:
            return other
        low = min(self.first, other.first)
        high = max(self.first + len(self.counts), other.first + len(other.counts))
        total = np.zeros(high - low, np.int64)
        for bins in (self, other):
            start = bins.first - low
            total[start : start + len(bins.counts)] += bins.counts
        return Bins(self.zero + other.zero, low, tuple(total.tolist()))

    def to_json(self) -> dict[str, Any]:
        """The file's form of the bins."""
        return {"zero": self.zero, "first": self.first, "counts": list(self.counts)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Bins:
        """The bins :meth:`to_json` wrote ``data`` from."""
        return cls(int(data["zero"]), int(data["first"]), tuple(data["counts"]))

    def bounds(self, relative_accuracy: float) -> tuple[np.ndarray, np.ndarray]:
        """Each bin's lower and upper bound, the zero bin's first (both 0)."""
        gamma = (1 + relative_accuracy) / (1 - relative_accuracy)
        keys = self.first + np.arange(len(self.counts), dtype=np.float64)
        lows: np.ndarray = np.concatenate([[0.0], gamma ** (keys - 1)])
        highs: np.ndarray = np.concatenate([[0.0], gamma**keys])
        return lows, highs

    def draw(
        self, rng: np.random.Generator, n: int, relative_accuracy: float
    ) -> np.ndarray:
        """``n`` values like the ones binned: a bin chosen by its count, then a
        value uniform within its bounds."""
        if not self.count:
            raise ValueError("cannot draw from empty bins")
        lows, highs = self.bounds(relative_accuracy)
        cumulative = np.cumsum([self.zero, *self.counts])
        chosen = np.searchsorted(
            cumulative, rng.random(n) * cumulative[-1], side="right"
        )
        spread = highs[chosen] - lows[chosen]
        values: np.ndarray = lows[chosen] + rng.random(n) * spread
        return values


EMPTY = Bins()


@dataclass(frozen=True)
class Side:
    """One version's requests in one slice: how many (errors included) and the
    sketches of the successful ones, end to end and the model's own time."""

    requests: int = 0
    e2e: Bins = EMPTY
    model: Bins = EMPTY

    def minus(self, earlier: Side) -> Side:
        """What was added since ``earlier``."""
        return Side(
            self.requests - earlier.requests,
            self.e2e.minus(earlier.e2e),
            self.model.minus(earlier.model),
        )

    def plus(self, other: Side) -> Side:
        """Both sides' requests together."""
        return Side(
            self.requests + other.requests,
            self.e2e.plus(other.e2e),
            self.model.plus(other.model),
        )

    def to_json(self) -> dict[str, Any]:
        """The file's form of the side."""
        return {
            "requests": self.requests,
            "e2e": self.e2e.to_json(),
            "model": self.model.to_json(),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Side:
        """The side :meth:`to_json` wrote ``data`` from."""
        return cls(
            int(data["requests"]),
            Bins.from_json(data["e2e"]),
            Bins.from_json(data["model"]),
        )


@dataclass(frozen=True)
class Slice:
    """One evaluation interval of a trial: its length, the canary's weight when
    it began, and each version's requests in it."""

    seconds: float
    weight: float
    stable: Side
    canary: Side

    def to_json(self) -> dict[str, Any]:
        """The file's form of the slice."""
        return {
            "seconds": round(self.seconds, 2),
            "weight": round(self.weight, 2),
            "stable": self.stable.to_json(),
            "canary": self.canary.to_json(),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Slice:
        """The slice :meth:`to_json` wrote ``data`` from."""
        return cls(
            float(data["seconds"]),
            float(data["weight"]),
            Side.from_json(data["stable"]),
            Side.from_json(data["canary"]),
        )


@dataclass(frozen=True)
class Run:
    """One trial's slices, in time order; ``version`` names its canary."""

    version: str
    slices: tuple[Slice, ...]
    recorded: str = field(
        default_factory=lambda: datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    )

    @property
    def seconds(self) -> float:
        """How long the slices last together."""
        return sum(s.seconds for s in self.slices)

    @property
    def requests(self) -> int:
        """Both versions' requests in the slices."""
        return sum(s.stable.requests + s.canary.requests for s in self.slices)

    @property
    def rps(self) -> float:
        """The measured request rate, both versions together."""
        return self.requests / self.seconds if self.seconds else 0.0

    def to_json(self) -> dict[str, Any]:
        """The file's form of the run."""
        return {
            "recorded": self.recorded,
            "version": self.version,
            "rps": round(self.rps, 1),
            "slices": [s.to_json() for s in self.slices],
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Run:
        """The run :meth:`to_json` wrote ``data`` from."""
        slices = tuple(Slice.from_json(s) for s in data["slices"])
        return cls(str(data["version"]), slices, str(data["recorded"]))


@dataclass(frozen=True)
class Recording:
    """A data file read back: runs per load and canary."""

    relative_accuracy: float
    loads: Mapping[str, Mapping[str, Sequence[Run]]]

    def runs(self, load: str, canary: str) -> Sequence[Run]:
        """The runs of ``canary`` under ``load``; none when not recorded."""
        return self.loads.get(load, {}).get(canary, ())

    def rps(self, load: str, canary: str) -> float:
        """The request rate measured over all of those runs."""
        runs = self.runs(load, canary)
        seconds = sum(r.seconds for r in runs)
        return sum(r.requests for r in runs) / seconds if seconds else 0.0


def read_recording(path: Path) -> Recording:
    """The runs saved in ``path``; raises ValueError on another format."""
    data = json.loads(path.read_text(encoding="utf-8"))
    if data.get("format") != FORMAT:
        raise ValueError(f"{path}: format {data.get('format')!r}, expected {FORMAT}")
    loads = {
        load: {
            canary: tuple(Run.from_json(r) for r in runs)
            for canary, runs in canaries.items()
        }
        for load, canaries in data["loads"].items()
    }
    return Recording(float(data["relative_accuracy"]), loads)


def save_run(
    path: Path, load: str, canary: str, run: Run, relative_accuracy: float
) -> None:
    """Add ``run`` to the file at ``path`` under ``load`` and ``canary``, keeping
    every other entry and the newest :data:`MAX_RUNS` of this one.

    Written whole to a temporary file and renamed over ``path``, so an interrupted
    write never leaves half a file. Raises ValueError when the file holds another
    format or bins of another relative accuracy.
    """
    data: dict[str, Any] = {
        "format": FORMAT,
        "relative_accuracy": relative_accuracy,
        "loads": {},
    }
    if path.exists():
        data = json.loads(path.read_text(encoding="utf-8"))
        if data.get("format") != FORMAT:
            raise ValueError(
                f"{path}: format {data.get('format')!r}, expected {FORMAT}"
            )
        if data["relative_accuracy"] != relative_accuracy:
            raise ValueError(
                f"{path} holds bins of relative accuracy "
                f"{data['relative_accuracy']}, not {relative_accuracy}"
            )
    runs = data["loads"].setdefault(load, {}).setdefault(canary, [])
    runs.append(run.to_json())
    del runs[:-MAX_RUNS]
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    with os.fdopen(handle, "w", encoding="utf-8") as file:
        json.dump(data, file, separators=(",", ":"))
        file.write("\n")
    os.replace(temporary, path)


# Rollout phases after the decision (rayfleet.platform.rollout.machine.Phase).
FINISHED = ("promoted", "rolled_back")


class Recorder:
    """Successive ``/-/validation?sketches=true`` answers in, slices out; a slice
    carries the canary's weight at its start, the split its traffic came under.

    Each answer must cover everything since the trial began (a window reaching
    back before the first request): a slice is the difference between two
    answers, so it holds exactly the requests the Validator took in between,
    late batches of observations included, and no request is in two slices.
    Polling a window of one interval instead would double-count: windows are
    whole buckets (10 s by default), longer than an evaluation interval.
    """

    def __init__(self, model: str) -> None:
        self.model = model
        self.relative_accuracy: float | None = None
        self._then: float | None = None
        self._weight = 0.0
        self._stable = Side()
        self._canary = Side()

    def observe(self, answer: Mapping[str, Any]) -> Slice | None:
        """The slice since the previous answer; ``None`` for the first answer (the
        starting point, so every slice spans two polls), before the rollout
        exists and after it ended.

        Raises ValueError when a version's numbers shrank (the window no longer
        covers the trial) or the sketches' relative accuracy changed.
        """
        entry = next(m for m in answer["models"] if m["name"] == self.model)
        rollout = entry["rollout"]
        # A finished rollout names the promoted canary as stable too: its
        # numbers are no later state of the old stable's, and decide nothing.
        if rollout is None or rollout["phase"] in FINISHED:
            return None
        stable, canary = (
            self._side(answer, entry, rollout[f"{which}_version"])
            for which in ("stable", "canary")
        )
        now, then = float(answer["now"]), self._then
        piece = None
        if then is not None:
            piece = Slice(
                now - then,
                self._weight,
                stable.minus(self._stable),
                canary.minus(self._canary),
            )
        self._then, self._weight = now, float(rollout["weight"])
        self._stable, self._canary = stable, canary
        return piece

    def _side(
        self, answer: Mapping[str, Any], entry: Mapping[str, Any], version: str
    ) -> Side:
        summary = next(v for v in entry["versions"] if v["name"] == version)
        sketches = answer["sketches"][self.model][version]
        for sketch in sketches.values():
            accuracy = float(sketch["relative_accuracy"])
            if self.relative_accuracy not in (None, accuracy):
                raise ValueError(
                    f"relative accuracy changed from {self.relative_accuracy} "
                    f"to {accuracy}"
                )
            self.relative_accuracy = accuracy
        return Side(
            int(summary["window"]["requests"]),
            Bins.of_sketch(sketches["e2e"]),
            Bins.of_sketch(sketches["model"]),
        )


class SliceSampler:
    """Recorded slices drawn again, one per simulated evaluation interval.

    A moving-block bootstrap: a block starts at a slice drawn uniformly and runs
    on through the slices that followed it in the same trial, up to ``block``
    of them, so bursts that last several intervals (a closed loop's queue
    filling, a neighbour's busy spell) recur as they happened; whole slices keep
    the two versions of one moment together, sharing its machine's load.
    Slices are drawn among those recorded at the canary's current weight (the
    nearest recorded weight when that one was not), since the weight sets how
    busy the canary's own replica is; slices before the first step (weight 0)
    are never drawn.
    """

    def __init__(self, runs: Sequence[Run], block: int) -> None:
        if block < 1:
            raise ValueError(f"block must be at least 1 slice: {block}")
        self.block = block
        self._runs = [run.slices for run in runs]
        self._pools: dict[float, list[tuple[int, int]]] = {}
        for r, slices in enumerate(self._runs):
            for i, piece in enumerate(slices):
                if piece.weight > 0:
                    self._pools.setdefault(piece.weight, []).append((r, i))
        if not self._pools:
            raise ValueError("no recorded slice with canary traffic")
        self._merged = {
            weight: (
                _merge(self._runs[r][i].stable for r, i in pool),
                _merge(self._runs[r][i].canary for r, i in pool),
            )
            for weight, pool in self._pools.items()
        }
        self._at: tuple[int, int] | None = None
        self._left = 0
        self._weight: float | None = None

    def fresh(self) -> SliceSampler:
        """A sampler of the same slices, at the start of no block: for a new run
        (the slices and their pools are shared, not copied)."""
        twin = copy.copy(self)
        twin._at, twin._left, twin._weight = None, 0, None
        return twin

    def nearest_weight(self, weight: float) -> float:
        """The recorded weight the sampler draws from at ``weight``."""
        return min(self._pools, key=lambda w: (abs(w - weight), w))

    def next(self, rng: np.random.Generator, weight: float) -> Slice:
        """The slice of the next interval at the canary's ``weight``."""
        recorded = self.nearest_weight(weight)
        following = None
        if self._at is not None and self._left and recorded == self._weight:
            r, i = self._at
            if i + 1 < len(self._runs[r]) and self._runs[r][i + 1].weight == recorded:
                following = (r, i + 1)
        if following is None:
            pool = self._pools[recorded]
            following = pool[int(rng.integers(len(pool)))]
            self._left = self.block
        self._at, self._weight = following, recorded
        self._left -= 1
        r, i = following
        return self._runs[r][i]

    def merged(self, weight: float) -> tuple[Side, Side]:
        """Stable's and the canary's requests of every slice drawn at ``weight``
        together: what an interval draws from when its own slice has none."""
        return self._merged[self.nearest_weight(weight)]


def _merge(sides: Iterable[Side]) -> Side:
    total = Side()
    for side in sides:
        total = total.plus(side)
    return total
