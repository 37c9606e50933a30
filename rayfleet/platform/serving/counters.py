"""Per-replica counters: kept where a request runs, gathered in one table.

Each replica that runs a version (a ``ModelReplica``, or a router replica for a
version placed in the router) counts what it served in :class:`ReplicaCounters`
and sends a :class:`ReplicaReport` of the running totals every few seconds, with
what it runs on (the :class:`~rayfleet.platform.runtimes.device.Device`) and its
Ray node. A replica of a pool also sends a :class:`PoolReport`: the versions it
holds now and its loads and unloads so far. The Validator keeps the latest report
of every replica in a :class:`LatestTable` per kind (:data:`ReplicaTable`,
:data:`PoolTable`), which ``/metrics`` renders as series labelled by replica, and
one ``rayfleet_replica_info`` series per replica naming its device.

Reports carry totals, never increments, so a lost report costs nothing but
freshness, and a replica that stops reporting (scaled down, crashed) is forgotten
after ``expire_s``: its series disappears, which Prometheus' ``rate()`` treats like
any other counter that ends.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

from rayfleet.platform.runtimes.device import Device

__all__ = [
    "LatestTable",
    "PoolReport",
    "PoolTable",
    "ReplicaCounters",
    "ReplicaReport",
    "ReplicaTable",
    "balance_ratio",
]


class _Keyed(Protocol):
    @property
    def key(self) -> tuple[str, ...]:
        """Which replica (and what of it) the report is about: a newer report
        with the same key replaces it."""
        ...


R = TypeVar("R", bound=_Keyed)


@dataclass(frozen=True)
class ReplicaReport:
    """The running totals of one replica for one version, as it last sent them,
    and what the replica runs on: ``provider`` and ``gpu_requested`` as in
    :class:`~rayfleet.platform.runtimes.device.Device` (``provider`` empty from a
    replica too old to say), ``node_id`` its Ray node (empty outside Ray)."""

    model: str
    version: str
    replica: str
    requests: int
    errors: int
    # Batch size -> how many batches of that size ran.
    batches: Mapping[int, int] = field(default_factory=dict)
    provider: str = ""
    gpu_requested: bool = False
    node_id: str = ""

    @property
    def key(self) -> tuple[str, str, str]:
        """The version and the replica reporting it."""
        return (self.model, self.version, self.replica)

    def to_dict(self) -> dict[str, Any]:
        """A plain-data copy, to cross a process boundary."""
        return {
            "model": self.model,
            "version": self.version,
            "replica": self.replica,
            "requests": self.requests,
            "errors": self.errors,
            "batches": {str(size): count for size, count in self.batches.items()},
            "provider": self.provider,
            "gpu_requested": self.gpu_requested,
            "node_id": self.node_id,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ReplicaReport:
        """The report :meth:`to_dict` wrote (or an older replica's, without its
        device, during a rolling update)."""
        return cls(
            model=str(data["model"]),
            version=str(data["version"]),
            replica=str(data["replica"]),
            requests=int(data["requests"]),
            errors=int(data["errors"]),
            batches={int(k): int(v) for k, v in data.get("batches", {}).items()},
            provider=str(data.get("provider", "")),
            gpu_requested=bool(data.get("gpu_requested", False)),
            node_id=str(data.get("node_id", "")),
        )


@dataclass
class ReplicaCounters:
    """What one replica has served of one version since it started."""

    requests: int = 0
    errors: int = 0
    batches: Counter[int] = field(default_factory=Counter)

    def served(self, requests: int = 1) -> None:
        """Count ``requests`` taken by this replica (before they run)."""
        self.requests += requests

    def failed(self, requests: int = 1) -> None:
        """Count ``requests`` whose model call raised."""
        self.errors += requests

    def ran_batch(self, size: int) -> None:
        """Count one model call over ``size`` requests."""
        self.batches[size] += 1

    def report(
        self, model: str, version: str, replica: str, *, device: Device, node_id: str
    ) -> ReplicaReport:
        """The totals so far, as a report from ``replica`` on Ray node
        ``node_id``, running the version on ``device``."""
        return ReplicaReport(
            model,
            version,
            replica,
            self.requests,
            self.errors,
            dict(self.batches),
            provider=device.provider,
            gpu_requested=device.gpu_requested,
            node_id=node_id,
        )


@dataclass(frozen=True)
class PoolReport:
    """The running totals of one replica of a pool, as it last sent them.

    ``loaded`` is the (model, version) pairs it holds now, loaded and ready, and
    ``loaded_bytes`` their size in the store; a version still loading is in
    neither. The rest count since the replica started, as its
    :class:`~rayfleet.platform.serving.pool.PoolStats` does: ``loads`` that
    succeeded and ``load_failures`` that raised, ``load_seconds`` spent in those
    that succeeded, ``unloads`` by reason, and ``load_waits``, requests that found
    their version not loaded and waited for it.
    ``node_id`` is the replica's Ray node (empty outside Ray).
    """

    pool: str
    replica: str
    node_id: str
    loaded: tuple[tuple[str, str], ...]
    loaded_bytes: int
    loads: int
    load_failures: int
    load_seconds: float
    unloads: Mapping[str, int]
    load_waits: int

    @property
    def key(self) -> tuple[str, str]:
        """The pool and the replica reporting it."""
        return (self.pool, self.replica)

    def to_dict(self) -> dict[str, Any]:
        """A plain-data copy, to cross a process boundary."""
        return {
            "pool": self.pool,
            "replica": self.replica,
            "node_id": self.node_id,
            "loaded": [[model, version] for model, version in self.loaded],
            "loaded_bytes": self.loaded_bytes,
            "loads": self.loads,
            "load_failures": self.load_failures,
            "load_seconds": self.load_seconds,
            "unloads": dict(self.unloads),
            "load_waits": self.load_waits,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PoolReport:
        """The report :meth:`to_dict` wrote."""
        return cls(
            pool=str(data["pool"]),
            replica=str(data["replica"]),
            node_id=str(data.get("node_id", "")),
            loaded=tuple(
                (str(model), str(version)) for model, version in data["loaded"]
            ),
            loaded_bytes=int(data["loaded_bytes"]),
            loads=int(data["loads"]),
            load_failures=int(data["load_failures"]),
            load_seconds=float(data["load_seconds"]),
            unloads={str(k): int(v) for k, v in data["unloads"].items()},
            load_waits=int(data["load_waits"]),
        )


class LatestTable(Generic[R]):
    """The latest report under each key; keys silent for ``expire_s`` drop out."""

    def __init__(self, expire_s: float = 60.0) -> None:
        self.expire_s = expire_s
        self._latest: dict[tuple[str, ...], tuple[float, R]] = {}

    def update(self, reports: Iterable[R], now: float) -> None:
        """Keep each report as its key's latest, received at ``now``."""
        for report in reports:
            self._latest[report.key] = (now, report)

    def current(self, now: float) -> list[R]:
        """Reports heard within ``expire_s``, sorted by key."""
        expired = [k for k, (at, _) in self._latest.items() if now - at > self.expire_s]
        for key in expired:
            del self._latest[key]
        return [self._latest[key][1] for key in sorted(self._latest)]


# The latest report of every replica of every version, and of every pool replica.
ReplicaTable = LatestTable[ReplicaReport]
PoolTable = LatestTable[PoolReport]


def balance_ratio(requests: Iterable[int]) -> float | None:
    """Busiest over least busy replica's requests; None with fewer than two
    replicas, infinity when one of them served nothing."""
    counts = list(requests)
    if len(counts) < 2:
        return None
    least, most = min(counts), max(counts)
    if least == 0:
        return float("inf") if most > 0 else 1.0
    return most / least
