"""ValidatorCore, driven by real observations on an injected clock, no Ray.

Traffic follows the core's own plan exactly (20 requests a second, split by the
weights), every request 5 ms end to end and 4 ms of model time, predicting
classes 0 and 1 in turn, so every gate passes and each step is decided by its
request count and its minimum time alone.
"""

from __future__ import annotations

import logging

import pytest

from rayfleet.platform.config.rollout import RolloutSpec
from rayfleet.platform.config.spec import (
    ModelSpec,
    ObservationSpec,
    PlatformSpec,
    VersionSpec,
)
from rayfleet.platform.errors import Conflict, ModelNotFound
from rayfleet.platform.rollout import Event, Phase
from rayfleet.platform.rollout.controller import ValidatorCore
from rayfleet.platform.rollout.state_store import MemoryStateStore
from rayfleet.platform.serving.aggregate import (
    ObservationAggregator,
    ObservationSummary,
)
from rayfleet.platform.validation.observation import Observation
from tests.observations import ingest_rows

T0 = 1_000_000.0
APP = "shop"
PER_SECOND = 20
# One-second buckets: a step's window then holds exactly the traffic sent in it.
OBSERVATIONS = ObservationSpec(bucket_s=1.0, horizon_s=3600.0)
ROLLOUT = RolloutSpec(steps=(10.0, 100.0), min_requests_per_step=20, min_step_s=10.0)
READY = {("digits", "v2"): True, ("digits", "v3"): True}


def platform() -> PlatformSpec:
    """digits: stable v1 and the canaries v2 then v3; iris: no rollout."""
    digits = ModelSpec(
        name="digits",
        versions=(
            VersionSpec(name="v1"),
            VersionSpec(name="v2", canary=True),
            VersionSpec(name="v3", canary=True),
        ),
        rollout=ROLLOUT,
    )
    iris = ModelSpec(name="iris", versions=(VersionSpec(name="v1"),))
    return PlatformSpec(
        store="memory://unused", observations=OBSERVATIONS, models=(digits, iris)
    )


def serve(
    core: ValidatorCore, start: float, seconds: int, failing: str | None = None
) -> None:
    """``seconds`` of digits traffic from ``start``, split as the plan says; every
    request to the ``failing`` version is a 500."""
    for second in range(seconds):
        weights = core.plans()["digits"].weights
        rows = [
            Observation(
                model="digits",
                version=version,
                ts=start + second + 0.5,
                latency_ms=5.0,
                model_ms=4.0,
                status=500 if version == failing else 200,
                prediction=float(i % 2),
            ).to_row()
            for version, weight in weights.items()
            for i in range(round(PER_SECOND * weight / 100))
        ]
        ingest_rows(core, rows, router="router-a")


def moves(events: list[Event]) -> list[tuple[str, str, str, float]]:
    return [(e.kind, e.version, e.stable, e.weight) for e in events]


def weights(core: ValidatorCore) -> dict[str, float]:
    return dict(core.plans()["digits"].weights)


def test_awaiting_canary_only_while_a_rollout_waits_for_its_canary() -> None:
    # The Validator asks Serve which versions are ready only while this holds.
    core = ValidatorCore(platform(), APP, MemoryStateStore(), {}, now=T0)
    assert core.rollouts["digits"].phase is Phase.PENDING
    assert core.awaiting_canary()
    core.tick(T0 + 10, READY)
    assert not core.awaiting_canary()
    serve(core, T0 + 10, 10)
    core.tick(T0 + 20, READY)
    serve(core, T0 + 20, 10)
    # v2 promoted, v3's rollout started: it waits for v3.
    assert moves(core.tick(T0 + 30, READY))[-1][:2] == ("rollout_started", "v3")
    assert core.awaiting_canary()

    no_rollout = PlatformSpec(
        store="memory://unused",
        observations=OBSERVATIONS,
        models=(ModelSpec(name="iris", versions=(VersionSpec(name="v1"),)),),
    )
    idle = ValidatorCore(no_rollout, APP, MemoryStateStore(), {}, now=T0)
    assert not idle.awaiting_canary()


def test_canaries_roll_out_one_at_a_time_in_declared_order() -> None:
    store = MemoryStateStore()
    core = ValidatorCore(platform(), APP, store, {}, now=T0)
    assert moves(core.events) == [("rollout_started", "v2", "v1", 0.0)]
    assert weights(core) == {"v1": 100.0, "v2": 0.0, "v3": 0.0}

    # Not ready: the rollout waits in PENDING and its step time does not run.
    assert core.tick(T0 + 5, {("digits", "v2"): False}) == []
    assert core.rollouts["digits"].phase is Phase.PENDING
    ticked = core.tick(T0 + 10, READY)
    assert moves(ticked) == [("step_advanced", "v2", "v1", 10.0)]
    assert weights(core) == {"v1": 90.0, "v2": 10.0, "v3": 0.0}

    # 20 canary requests, but only 9 s into the step: not yet.
    serve(core, T0 + 10, 9)
    assert core.tick(T0 + 19, READY) == []
    serve(core, T0 + 19, 1)
    assert moves(core.tick(T0 + 20, READY)) == [("step_advanced", "v2", "v1", 100.0)]
    assert weights(core) == {"v1": 0.0, "v2": 100.0, "v3": 0.0}

    # At 100% stable's numbers come from its last window with traffic.
    serve(core, T0 + 20, 10)
    promoted = core.tick(T0 + 30, READY)
    assert moves(promoted) == [
        ("promoted", "v2", "v1", 100.0),
        ("rollout_started", "v3", "v2", 0.0),
    ]
    assert core.stable["digits"] == "v2"
    assert weights(core) == {"v1": 0.0, "v2": 100.0, "v3": 0.0}

    # v3 goes next, against the new stable.
    assert moves(core.tick(T0 + 31, READY)) == [("step_advanced", "v3", "v2", 10.0)]
    assert weights(core) == {"v1": 0.0, "v2": 90.0, "v3": 10.0}
    serve(core, T0 + 31, 10)
    assert moves(core.tick(T0 + 41, READY)) == [("step_advanced", "v3", "v2", 100.0)]
    serve(core, T0 + 41, 10)
    assert moves(core.tick(T0 + 51, READY)) == [("promoted", "v3", "v2", 100.0)]

    # Nothing is left to roll out: ticks change nothing.
    assert core.tick(T0 + 60, READY) == []
    assert core.finished["digits"] == {"v2": "promoted", "v3": "promoted"}
    assert store.keys() == ["shop/digits"]  # iris has nothing to keep
    saved = store.read_state("shop/digits")
    assert saved is not None
    assert (saved["stable"], saved["finished"]) == (
        "v3",
        {"v2": "promoted", "v3": "promoted"},
    )
    assert saved["rollout"]["phase"] == "promoted"


def test_a_second_core_over_the_same_store_resumes_the_rollout() -> None:
    store = MemoryStateStore()
    first = ValidatorCore(platform(), APP, store, {}, now=T0)
    first.tick(T0, READY)
    serve(first, T0, 5)

    # The Validator restarts halfway through the 10% step.
    second = ValidatorCore(platform(), APP, store, {}, now=T0 + 5)
    assert second.rollouts == first.rollouts
    assert second.rollouts["digits"].step_started_at == T0
    assert second.plans() == first.plans()
    assert second.events == []  # nothing started anew

    # It judges the step on the traffic it sees itself, from the step's start.
    serve(second, T0 + 5, 5)
    assert second.tick(T0 + 9, READY) == []
    serve(second, T0 + 10, 5)
    assert moves(second.tick(T0 + 15, READY)) == [("step_advanced", "v2", "v1", 100.0)]
    assert second.rollouts["digits"].history[-1].ts == T0 + 15


def test_a_finished_canary_is_never_started_again() -> None:
    store = MemoryStateStore()
    core = ValidatorCore(platform(), APP, store, {}, now=T0)
    core.tick(T0, READY)
    core.act("digits", "rollback", T0 + 1)

    restarted = ValidatorCore(platform(), APP, store, {}, now=T0 + 2)
    assert restarted.finished["digits"] == {"v2": "rolled_back"}
    assert restarted.stable["digits"] == "v1"
    state = restarted.rollouts["digits"]
    assert (state.canary_version, state.phase) == ("v3", Phase.PENDING)


def test_an_unreadable_saved_rollout_is_ignored(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = MemoryStateStore()
    saved = {"stable": "v1", "rollout": {"format": 99}, "finished": {}}
    store.write_state("shop/digits", saved)
    with caplog.at_level(logging.WARNING):
        core = ValidatorCore(platform(), APP, store, {}, now=T0)
    assert "ignoring unreadable rollout of digits" in caplog.text
    assert moves(core.events) == [("rollout_started", "v2", "v1", 0.0)]


def test_operators_pause_resume_and_set_weights() -> None:
    core = ValidatorCore(platform(), APP, MemoryStateStore(), {}, now=T0)
    core.tick(T0, READY)

    paused = core.act("digits", "pause", T0 + 1)
    assert moves(paused) == [("paused", "v2", "v1", 10.0)]
    assert paused[0].reason == "operator: pause"
    # Paused, ticks change nothing, whatever the traffic.
    serve(core, T0 + 1, 20)
    assert core.tick(T0 + 21, READY) == []
    assert core.rollouts["digits"].phase is Phase.PAUSED

    assert moves(core.act("digits", "resume", T0 + 22)) == [
        ("resumed", "v2", "v1", 10.0)
    ]
    assert core.rollouts["digits"].step_started_at == T0 + 22

    set_to = core.act("digits", "weights", T0 + 23, weight=40.0)
    assert moves(set_to) == [("weight_set", "v2", "v1", 40.0)]
    assert weights(core) == {"v1": 60.0, "v2": 40.0, "v3": 0.0}
    assert core.rollouts["digits"].step_index == 1  # the next step is 100%


def test_operators_promote_and_roll_back() -> None:
    core = ValidatorCore(platform(), APP, MemoryStateStore(), {}, now=T0)
    core.tick(T0, READY)

    promoted = core.act("digits", "promote", T0 + 1)
    assert moves(promoted) == [
        ("promoted", "v2", "v1", 100.0),
        ("rollout_started", "v3", "v2", 0.0),
    ]
    assert core.stable["digits"] == "v2"

    rolled_back = core.act("digits", "rollback", T0 + 2)
    assert moves(rolled_back) == [("rolled_back", "v3", "v2", 0.0)]
    assert core.finished["digits"] == {"v2": "promoted", "v3": "rolled_back"}
    assert weights(core) == {"v1": 0.0, "v2": 100.0, "v3": 0.0}


@pytest.mark.parametrize(
    ("model", "action", "weight", "error", "message"),
    [
        ("digits", "resume", None, Conflict, "cannot resume the rollout"),
        ("digits", "weights", None, Conflict, "weights needs a canary weight"),
        ("digits", "restart", None, ModelNotFound, "no rollout action 'restart'"),
        ("iris", "pause", None, ModelNotFound, "model 'iris' has no rollout"),
        ("fraud", "pause", None, ModelNotFound, "no model 'fraud'"),
    ],
)
def test_operator_actions_that_do_not_apply_are_refused(
    model: str,
    action: str,
    weight: float | None,
    error: type[Exception],
    message: str,
) -> None:
    core = ValidatorCore(platform(), APP, MemoryStateStore(), {}, now=T0)
    before = core.rollouts["digits"]
    with pytest.raises(error, match=message):
        core.act(model, action, T0 + 1, weight=weight)
    assert core.rollouts["digits"] == before


def test_a_finished_rollout_refuses_promote_and_rollback() -> None:
    core = ValidatorCore(platform(), APP, MemoryStateStore(), {}, now=T0)
    core.act("digits", "promote", T0 + 1)  # v2; v3 starts
    core.act("digits", "promote", T0 + 2)  # v3; nothing left
    for action in ("promote", "rollback", "pause"):
        with pytest.raises(Conflict, match=f"it is {Phase.PROMOTED.value}"):
            core.act("digits", action, T0 + 3)
    assert core.stable["digits"] == "v3"


def _summary(bucket_s: float, versions: tuple[str, ...]) -> ObservationSummary:
    aggregator = ObservationAggregator(ObservationSpec(bucket_s=bucket_s))
    for version in versions:
        aggregator.record(Observation("digits", version, T0, 5.0, 4.0, 200))
    return aggregator.take()


def test_a_router_with_other_buckets_is_left_out_whole() -> None:
    # During a redeploy that changes bucket_s, an old router's parts would not
    # line up: none of them is merged, and the core's own keep their counts.
    core = ValidatorCore(platform(), APP, MemoryStateStore(), {}, now=T0)
    assert core.ingest(_summary(OBSERVATIONS.bucket_s, ("v1", "v2"))) == 2
    assert core.ingest(_summary(10 * OBSERVATIONS.bucket_s, ("v1", "v2"))) == 0
    assert [
        core.stats[("digits", v)].window(60, T0).requests for v in ("v1", "v2")
    ] == [1, 1]
    assert core.ingested == 2


def test_pairs_a_router_had_no_room_for_count_as_evicted() -> None:
    core = ValidatorCore(platform(), APP, MemoryStateStore(), {}, now=T0)
    summary = ObservationSummary(unpaired={"digits": 3, "gone": 2})
    core.ingest(summary)
    assert core.agreement["digits"].snapshot().evicted == 3
