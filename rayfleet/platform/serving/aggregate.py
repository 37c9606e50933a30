"""What a router sends the Validator: its observations summed up, not one by one.

A router adds each request's :class:`Observation` to per-version statistics of its
own (the Validator's :class:`~rayfleet.platform.validation.window.WindowedStats`
with the same buckets, and the Prometheus counters of
:class:`~rayfleet.platform.validation.totals.Totals`) and ships them every flush as
one :class:`ObservationSummary`; the Validator merges them. Everything in those
statistics merges exactly: counts and histograms add, latency sketches of the
same accuracy add bin by bin, and the feature and prediction samples are bottom-k
samples, whose merge is the sample of every router's traffic together. So the
Validator's windows are what they were with one row per request, while its work
no longer grows with the request rate.

The one thing that does not sum is agreement, which pairs a shadow's answer with
its primary's by request id: observations that carry a ``request_id`` are also
kept as rows, in a bounded :class:`~rayfleet.platform.serving.buffer.ObservationBuffer`.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field

from rayfleet.platform.config.spec import ObservationSpec
from rayfleet.platform.serving.buffer import ObservationBuffer
from rayfleet.platform.validation.observation import Observation, ObservationRow
from rayfleet.platform.validation.totals import Totals
from rayfleet.platform.validation.window import WindowedStats

__all__ = [
    "ObservationAggregator",
    "ObservationSummary",
    "VersionPart",
    "windowed_stats",
]

VersionKey = tuple[str, str]


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
    are counted in ``versions`` already.
    """

    versions: dict[VersionKey, VersionPart] = field(default_factory=dict)
    pairs: list[ObservationRow] = field(default_factory=list)

    @property
    def observations(self) -> int:
        """How many requests the summary holds."""
        return sum(part.observations for part in self.versions.values())


class ObservationAggregator:
    """The router's recorder: sums observations up until :meth:`take`.

    Recording never waits. Memory is bounded whatever the traffic: the statistics
    by their buckets and samples, the pair rows by ``spec.buffer_size`` (a full
    buffer drops and counts, in :attr:`dropped`, with summaries that could not be
    delivered: :meth:`lose`).
    """

    def __init__(
        self,
        spec: ObservationSpec,
        seed: Callable[[], int] = lambda: random.getrandbits(63),
    ) -> None:
        self.spec = spec
        # Every summary's samples need priorities independent of every other's,
        # this router's earlier ones and other routers' alike, or merging them
        # would not give a uniform sample.
        self._seed = seed
        self._pairs = ObservationBuffer(spec.buffer_size)
        self._versions: dict[VersionKey, VersionPart] = {}
        self._pending = 0
        self._lost = 0

    def __len__(self) -> int:
        """Observations recorded since the last :meth:`take`."""
        return self._pending

    @property
    def dropped(self) -> int:
        """Observations lost so far: pair rows past the bound, and summaries that
        could not be delivered."""
        return self._pairs.dropped + self._lost

    def record(self, observation: Observation) -> None:
        """Add ``observation`` to its version's statistics."""
        key = (observation.model, observation.version)
        part = self._versions.get(key)
        if part is None:
            part = VersionPart(windowed_stats(self.spec, self._seed()))
            self._versions[key] = part
        part.stats.add(observation)
        part.totals.add(observation)
        part.observations += 1
        self._pending += 1
        if observation.request_id is not None:
            self._pairs.record(observation)

    def take(self) -> ObservationSummary:
        """Everything recorded since the last call, and start afresh."""
        summary = ObservationSummary(
            self._versions, self._pairs.drain(self.spec.buffer_size)
        )
        self._versions = {}
        self._pending = 0
        return summary

    def lose(self, summary: ObservationSummary) -> None:
        """Count ``summary``'s observations as lost: it could not be delivered."""
        self._lost += summary.observations
