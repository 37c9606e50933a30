"""The router's one call to the Validator: observations out, plans back, over a
stand-in handle (no Ray started). Plans come at once on start, then with every
flush; a Validator that fails costs the observations, never the last plan."""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from rayfleet.deployments.router import ValidatorLink
from rayfleet.platform.config.signature import Signature
from rayfleet.platform.config.spec import parse_spec
from rayfleet.platform.config.store import Manifest
from rayfleet.platform.serving.aggregate import (
    ObservationAggregator,
    ObservationSummary,
)
from rayfleet.platform.serving.inprocess import InProcessBackend
from rayfleet.platform.serving.service import InferenceService
from rayfleet.platform.serving.traffic import TrafficPlan
from rayfleet.platform.validation.observation import Observation

CANARY = TrafficPlan("m", {"a": 90.0, "b": 10.0})
SIGNATURE = Signature.model_validate(
    {
        "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 4]}],
        "outputs": [{"name": "y", "datatype": "FP32", "shape": [-1]}],
    }
)


class StandInValidator:
    """Answers every call with ``CANARY`` unless told to fail, to refuse the
    observations, or to answer with a plan no router can read."""

    def __init__(self) -> None:
        self.calls: list[ObservationSummary] = []
        self.failing = False
        self.refusing = False
        self.garbled = 0
        self.sync = SimpleNamespace(remote=self._sync)

    async def _sync(
        self,
        summary: ObservationSummary,
        router: str,
        dropped: int,
        request_log: dict[str, Any] | None,
    ) -> dict[str, Any]:
        self.calls.append(summary)
        if self.failing:
            raise ConnectionError("the Validator is restarting")
        if self.garbled:
            self.garbled -= 1
            return {"plans": {"m": {"weights": None}}, "ingested": True}
        return {"plans": {"m": CANARY.to_dict()}, "ingested": not self.refusing}


def link(
    tmp_path: Path, **observations: float
) -> tuple[ValidatorLink, StandInValidator]:
    spec = parse_spec(
        {
            "store": str(tmp_path),
            "observations": observations,
            "models": [
                {"name": "m", "versions": [{"name": "a"}, {"name": "b", "weight": 0}]}
            ],
        }
    )
    manifest = Manifest(runtime="python", signature=SIGNATURE)
    service = InferenceService(
        spec, {"m": {"a": manifest, "b": manifest}}, InProcessBackend({})
    )
    validator = StandInValidator()
    observed = ObservationAggregator(spec.observations)
    handle: Any = validator
    return (
        ValidatorLink(service, handle, observed, "r1", InProcessBackend({})),
        validator,
    )


def observe(link: ValidatorLink, count: int) -> None:
    for index in range(count):
        link.observed.record(Observation("m", "a", 1e9 + index, 2.0, 1.0, 200))


async def run_for(link: ValidatorLink, seconds: float) -> None:
    task = asyncio.create_task(link.sync_loop())
    await asyncio.sleep(seconds)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


def test_plans_come_at_once_and_with_the_observations(tmp_path: Path) -> None:
    router, validator = link(tmp_path, flush_every_s=10.0, plan_poll_s=10.0)
    observe(router, 3)
    asyncio.run(run_for(router, 0.3))
    # One call, long before either period is up, carrying what was observed.
    assert [call.observations for call in validator.calls] == [3]
    assert router.service.plan("m").weights == CANARY.weights


def test_an_idle_router_still_asks_for_plans(tmp_path: Path) -> None:
    router, validator = link(tmp_path, flush_every_s=0.1, plan_poll_s=0.3)
    asyncio.run(run_for(router, 1.0))
    # Nothing to send: a call only every plan_poll_s, not every flush_every_s.
    assert 2 <= len(validator.calls) <= 4
    assert all(call.observations == 0 for call in validator.calls)


def test_a_failing_validator_costs_observations_not_the_plan(tmp_path: Path) -> None:
    router, validator = link(tmp_path, flush_every_s=0.1, plan_poll_s=10.0)

    async def scenario() -> None:
        await run_for(router, 0.2)
        validator.failing = True
        observe(router, 5)
        await run_for(router, 0.3)

    asyncio.run(scenario())
    assert router.observed.dropped == 5
    assert router.service.plan("m").weights == CANARY.weights


def test_refused_observations_are_counted_and_the_plan_still_applies(
    tmp_path: Path,
) -> None:
    router, validator = link(tmp_path, flush_every_s=10.0, plan_poll_s=10.0)
    validator.refusing = True
    observe(router, 4)
    asyncio.run(run_for(router, 0.3))
    assert router.observed.dropped == 4
    assert router.service.plan("m").weights == CANARY.weights


def test_a_plan_that_will_not_parse_does_not_end_the_loop(tmp_path: Path) -> None:
    router, validator = link(tmp_path, flush_every_s=0.1, plan_poll_s=0.1)
    validator.garbled = 2
    asyncio.run(run_for(router, 0.8))
    assert len(validator.calls) >= 3
    assert router.service.plan("m").weights == CANARY.weights
