"""Observation rows into a Validator core, the way routers deliver them."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from rayfleet.platform.rollout.controller import ValidatorCore
from rayfleet.platform.serving.aggregate import ObservationAggregator
from rayfleet.platform.validation.observation import Observation, ObservationRow


def ingest_rows(
    core: ValidatorCore,
    rows: Iterable[ObservationRow],
    router: str = "",
    dropped: int = 0,
    request_log: Mapping[str, Any] | None = None,
) -> int:
    """Record ``rows`` in a router's aggregator and ingest its summary."""
    aggregator = ObservationAggregator(core.spec.observations)
    for row in rows:
        aggregator.record(Observation.from_row(row))
    return core.ingest(aggregator.take(), router, dropped, request_log)
