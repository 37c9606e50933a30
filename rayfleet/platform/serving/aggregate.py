"""What a router sends the Validator: its observations summed up, not one by one.

A router keeps each request's :class:`Observation` in a list, adds the list to
per-version statistics of its own at the flush, a version's observations at a
time in a few numpy passes (the Validator's
:class:`~rayfleet.platform.validation.window.WindowedStats` with the same
buckets, and the Prometheus counters of
:class:`~rayfleet.platform.validation.totals.Totals`), and ships them as one
:class:`ObservationSummary`; the Validator merges them. Those statistics
merge exactly: counts and histograms add, latency sketches of the same accuracy
add bin by bin, and the feature and prediction samples are bottom-k samples,
whose merge is the sample of every router's traffic together. (One exception:
past ``max_classes`` distinct classes in a bucket, which classes get their own
count depends on the order summaries arrive in.) So the Validator's windows are
what they were with one row per request, while a flush costs it what the
versions and buckets it touches hold, at most a sample of 500 rows a bucket,
whatever the number of requests in it.

The one thing that does not sum is agreement, which pairs a shadow's answer with
its primary's by request id: observations that carry a ``request_id`` are also
kept as rows, in a bounded :class:`~rayfleet.platform.serving.buffer.ObservationBuffer`,
and only they can make a router flush before ``flush_every_s``.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass, field

from rayfleet.platform.config.spec import ObservationSpec
from rayfleet.platform.serving.buffer import ObservationBuffer
from rayfleet.platform.validation.observation import (
    Observation,
    ObservationColumns,
    ObservationRow,
)
from rayfleet.platform.validation.totals import Totals
from rayfleet.platform.validation.window import WindowedStats

__all__ = [
    "ObservationAggregator",
    "ObservationSummary",
    "VersionPart",
    "windowed_stats",
]

VersionKey = tuple[str, str]

# Observations wait in a list and join their statistics a flush's worth at a time
# (a tenth of the CPU of one at a time), or sooner past this many, which bounds
# the list whatever the traffic.
FOLD_EVERY = 4096


def windowed_stats(spec: ObservationSpec, seed: int = 0) -> WindowedStats:
    """The per-version windows both the Validator and a router keep: one
    definition, so a router's buckets always line up with the Validator's."""
    return WindowedStats(bucket_s=spec.bucket_s, horizon_s=spec.horizon_s, seed=seed)


@dataclass
class VersionPart:
    """One version's share of a summary: ``observations`` requests, summed."""

    stats: WindowedStats
    totals: Totals = field(default_factory=Totals)
    observations: int = 0


@dataclass
class ObservationSummary:
    """Everything one router observed since its last flush.

    ``versions`` holds the statistics by ``(model, version)``; ``pairs`` the rows of
    the observations with a ``request_id`` (shadow pairs), for agreement only: they
    are counted in ``versions`` already. ``unpaired`` counts, by model, the pair
    rows the router's buffer had no room for: their partners can never match.
    """

    versions: dict[VersionKey, VersionPart] = field(default_factory=dict)
    pairs: list[ObservationRow] = field(default_factory=list)
    unpaired: dict[str, int] = field(default_factory=dict)

    @property
    def observations(self) -> int:
        """How many requests the summary holds."""
        return sum(part.observations for part in self.versions.values())


def _fresh_seed() -> int:
    # From the OS, not the random module: a model in the router may seed that
    # (ML code often does), and then every summary would repeat its priorities.
    return secrets.randbits(63)


class ObservationAggregator:
    """The router's recorder: sums observations up until :meth:`take`.

    Recording never waits. Memory is bounded whatever the traffic: the statistics
    by their buckets and samples, the observations waiting for the next fold by
    :data:`FOLD_EVERY`, the pair rows by ``spec.buffer_size`` (those past it go
    to ``unpaired``). :attr:`dropped` counts the observations of the
    summaries that could not be delivered (:meth:`lose`).
    """

    def __init__(
        self, spec: ObservationSpec, seed: Callable[[], int] = _fresh_seed
    ) -> None:
        self.spec = spec
        # Every summary's samples need priorities independent of every other's,
        # this router's earlier ones and other routers' alike, or merging them
        # would not give a uniform sample.
        self._seed = seed
        self._pairs = ObservationBuffer(spec.buffer_size)
        self._unpaired: dict[str, int] = {}
        self._versions: dict[VersionKey, VersionPart] = {}
        self._pending: list[Observation] = []
        self.dropped = 0

    def __len__(self) -> int:
        """Pair rows waiting: all the rest is bounded whatever the traffic, so
        only these call for an early flush."""
        return len(self._pairs)

    def record(self, observation: Observation) -> None:
        """Add ``observation`` to its version's statistics (by the next
        :meth:`take`)."""
        self._pending.append(observation)
        if len(self._pending) >= FOLD_EVERY:
            self._fold()
        if observation.request_id is not None:
            if len(self._pairs) < self._pairs.capacity:
                self._pairs.record(observation)
            else:
                model = observation.model
                self._unpaired[model] = self._unpaired.get(model, 0) + 1

    def _fold(self) -> None:
        """Add the pending observations to their versions' statistics, a
        version's at a time."""
        by_version: dict[VersionKey, list[Observation]] = {}
        for observation in self._pending:
            key = (observation.model, observation.version)
            rows = by_version.get(key)
            if rows is None:
                by_version[key] = [observation]
            else:
                rows.append(observation)
        self._pending = []
        for key, rows in by_version.items():
            part = self._versions.get(key)
            if part is None:
                part = VersionPart(windowed_stats(self.spec, self._seed()))
                self._versions[key] = part
            columns = ObservationColumns.of(rows)
            part.stats.add_columns(columns)
            part.totals.add_columns(columns)
            part.observations += len(rows)

    def take(self) -> ObservationSummary:
        """Everything recorded since the last call, and start afresh."""
        self._fold()
        summary = ObservationSummary(
            self._versions, self._pairs.drain(len(self._pairs)), self._unpaired
        )
        self._versions = {}
        self._unpaired = {}
        return summary

    def lose(self, summary: ObservationSummary) -> None:
        """Count ``summary``'s observations as lost: it could not be delivered."""
        self.dropped += summary.observations
