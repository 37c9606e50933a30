"""Per-replica request counters: kept where a request runs, gathered in one table.

Each replica that runs a version (a ``ModelReplica``, or a router replica for a
version placed in the router) counts what it served in :class:`ReplicaCounters`
and sends a :class:`ReplicaReport` of the running totals every few seconds, with
what it runs on (the :class:`~rayfleet.platform.runtimes.device.Device`) and its
Ray node. The Validator keeps the latest report of every replica in a
:class:`ReplicaTable`, which ``/metrics`` renders as counters labelled by replica,
and one ``rayfleet_replica_info`` series per replica naming its device.

Reports carry totals, never increments, so a lost report costs nothing but
freshness, and a replica that stops reporting (scaled down, crashed) is forgotten
after ``expire_s``: its series disappears, which Prometheus' ``rate()`` treats like
any other counter that ends.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from rayfleet.platform.runtimes.device import Device

__all__ = ["ReplicaCounters", "ReplicaReport", "ReplicaTable", "balance_ratio"]


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


class ReplicaTable:
    """The latest report of every replica; replicas silent for ``expire_s`` drop out."""

    def __init__(self, expire_s: float = 60.0) -> None:
        self.expire_s = expire_s
        self._latest: dict[tuple[str, str, str], tuple[float, ReplicaReport]] = {}

    def update(self, reports: Iterable[ReplicaReport], now: float) -> None:
        """Keep each report as its replica's latest, received at ``now``."""
        for report in reports:
            key = (report.model, report.version, report.replica)
            self._latest[key] = (now, report)

    def current(self, now: float) -> list[ReplicaReport]:
        """Reports of replicas heard from within ``expire_s``, sorted by key."""
        expired = [k for k, (at, _) in self._latest.items() if now - at > self.expire_s]
        for key in expired:
            del self._latest[key]
        return [self._latest[key][1] for key in sorted(self._latest)]


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
