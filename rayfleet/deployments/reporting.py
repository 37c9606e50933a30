"""Sending a replica's running totals to the Validator, every few seconds."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from ray.serve.handle import DeploymentHandle

from rayfleet.platform.constants import REPLICA_REPORT_TIMEOUT_S

__all__ = ["Report", "report_forever"]

logger = logging.getLogger("ray.serve")


class Report(Protocol):
    """What a replica reports: a
    :class:`~rayfleet.platform.serving.counters.ReplicaReport` or a
    :class:`~rayfleet.platform.serving.counters.PoolReport`."""

    def to_dict(self) -> dict[str, Any]:
        """A plain-data copy, to cross a process boundary."""
        ...


async def report_forever(
    validator: DeploymentHandle[Any],
    reports: Callable[[], Sequence[Report]],
    every_s: float,
    *,
    method: str = "replica_report",
) -> None:
    """Send ``reports()`` to the Validator's ``method`` every ``every_s``, for ever.

    Reports are running totals, so one that fails (the Validator restarting or
    gone) is simply superseded by the next; nothing here touches a request.
    """
    while True:
        # A router with no version placed in it has nothing to report.
        if batch := [report.to_dict() for report in reports()]:
            try:
                await asyncio.wait_for(
                    validator.options(method_name=method).remote(batch),
                    timeout=REPLICA_REPORT_TIMEOUT_S,
                )
            except Exception as error:  # the next report carries the same totals
                logger.debug("%s failed: %r", method, error)
        await asyncio.sleep(every_s)
