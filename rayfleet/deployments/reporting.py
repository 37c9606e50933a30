"""Sending a replica's request counters to the Validator, every few seconds."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from ray.serve.handle import DeploymentHandle

from rayfleet.platform.constants import REPLICA_REPORT_TIMEOUT_S
from rayfleet.platform.serving.counters import ReplicaReport

__all__ = ["report_forever"]

logger = logging.getLogger("ray.serve")


async def report_forever(
    validator: DeploymentHandle[Any],
    reports: Callable[[], list[ReplicaReport]],
    every_s: float,
) -> None:
    """Send ``reports()`` to the Validator every ``every_s``, for ever.

    Reports are running totals, so one that fails (the Validator restarting or
    gone) is simply superseded by the next; nothing here touches a request.
    """
    while True:
        # A router with no version placed in it has nothing to report.
        if batch := [report.to_dict() for report in reports()]:
            try:
                await asyncio.wait_for(
                    validator.replica_report.remote(batch),
                    timeout=REPLICA_REPORT_TIMEOUT_S,
                )
            except Exception as error:  # the next report carries the same totals
                logger.debug("replica report failed: %r", error)
        await asyncio.sleep(every_s)
