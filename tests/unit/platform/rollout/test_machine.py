from __future__ import annotations

import json
import math
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from loadtest.sim_rollout import BAD_V3, IDENTICAL, simulate
from rayfleet.platform.config.rollout import EVENT_KINDS, GateSpec, RolloutSpec
from rayfleet.platform.rollout import (
    Event,
    InvalidTransition,
    Phase,
    RolloutState,
    Verdict,
    WindowComparison,
    evaluate_gates,
    pause,
    promote,
    resume,
    rollback,
    set_weight,
    shadow_percent,
    start,
    step,
    traffic_weights,
)
from rayfleet.platform.thresholds import GATE_NAMES, GateResult
from tests.unit.platform.rollout.latency_samples import grid, measured

SPEC = RolloutSpec()
# Two failures in a row sit below this threshold: the count tests need room.
THREE = RolloutSpec(failure_threshold=3)


@dataclass
class FakeClock:
    now: float = 1_000.0

    def advance(self, seconds: float) -> float:
        self.now += seconds
        return self.now


def healthy(requests: int = 100, **changes: Any) -> WindowComparison:
    """A window in which the canary matches stable on every gate."""
    base = WindowComparison(
        canary_requests=requests,
        stable_requests=requests * 19,
        canary_error_rate=0.0,
        stable_error_rate=0.001,
        canary_p50_ms=8.0,
        canary_p99_ms=20.0,
        stable_p50_ms=8.0,
        stable_p99_ms=21.0,
        prediction_js=0.02,
        input_drift_share=0.0,
    )
    return replace(base, **changes)


def at_first_step(
    clock: FakeClock, spec: RolloutSpec = SPEC
) -> tuple[RolloutState, tuple[Event, ...]]:
    state, _ = start("digits", "v2", "v1", spec, clock.now)
    return step(state, spec, healthy(0), clock.now)


def kinds(events: tuple[Event, ...]) -> list[str]:
    return [event.kind for event in events]


# --- spec -----------------------------------------------------------------------


def test_spec_defaults_match_the_documented_plan() -> None:
    assert SPEC.steps == (5, 25, 50, 100)
    assert SPEC.shadow_percent is None
    assert (SPEC.min_requests_per_step, SPEC.min_step_s) == (100, 30)
    gates = SPEC.gates
    assert (
        gates.max_model_p50_ratio,
        gates.max_model_p99_ratio,
        gates.max_e2e_p99_ms,
    ) == (
        1.5,
        2.0,
        500,
    )
    assert (gates.max_error_rate_delta, gates.max_prediction_js) == (0.01, 0.1)
    assert (gates.max_input_drift_share, gates.min_agreement) == (0.25, 0.9)
    assert gates.min_prediction_chi2_pvalue is None
    assert (SPEC.failure_threshold, gates.latency_confidence) == (2, 0.99)


@pytest.mark.parametrize(
    "steps",
    [(), (5, 5, 100), (50, 25, 100), (5, 50), (0, 100), (5, 101), (-5, 100)],
)
def test_steps_must_increase_to_100(steps: tuple[float, ...]) -> None:
    with pytest.raises(ValidationError, match=r"steps|greater than|less than"):
        RolloutSpec(steps=steps)


@pytest.mark.parametrize(
    "fields",
    [
        {"typo": 1},
        {"min_requests_per_step": 0},
        {"shadow_percent": 0},
        {"min_step_s": 60, "max_step_s": 30},
        {"gates": {"max_prediction_js": 2}},
        {"gates": {"max_error_rate_delta": -0.1}},
        {"gates": {"unknown_gate": 1}},
    ],
)
def test_spec_rejects(fields: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        RolloutSpec.model_validate(fields)


def test_spec_is_frozen_and_gates_can_be_disabled() -> None:
    with pytest.raises(ValidationError):
        SPEC.min_step_s = 1
    off = GateSpec(
        max_model_p50_ratio=None,
        max_model_p99_ratio=None,
        max_e2e_p99_ms=None,
        max_error_rate_delta=None,
        max_prediction_js=None,
        max_input_drift_share=None,
        min_agreement=None,
    )
    assert evaluate_gates(healthy(), off) == ()


# --- gates ----------------------------------------------------------------------


def verdicts(comparison: WindowComparison, **kw: Any) -> dict[str, Verdict]:
    gates = GateSpec(min_prediction_chi2_pvalue=0.001)
    return {r.name: r.verdict for r in evaluate_gates(comparison, gates, **kw)}


def test_healthy_window_passes_or_skips_every_gate() -> None:
    assert verdicts(healthy()) == {
        "model_p50_ratio": Verdict.PASS,
        "model_p99_ratio": Verdict.PASS,
        "e2e_p99_ms": Verdict.PASS,
        "error_rate_delta": Verdict.PASS,
        "prediction_js": Verdict.PASS,
        "prediction_chi2_pvalue": Verdict.SKIPPED,
        "input_drift_share": Verdict.PASS,
        "agreement": Verdict.SKIPPED,
    }


@pytest.mark.parametrize(
    ("changes", "gate", "verdict"),
    [
        # Latency and errors apply to every model: missing data is pending.
        ({"canary_p50_ms": None}, "model_p50_ratio", Verdict.PENDING),
        ({"stable_p50_ms": 0.0}, "model_p50_ratio", Verdict.PENDING),
        ({"stable_p99_ms": None}, "model_p99_ratio", Verdict.PENDING),
        ({"canary_p99_ms": None}, "e2e_p99_ms", Verdict.PENDING),
        ({"canary_requests": 0}, "error_rate_delta", Verdict.PENDING),
        ({"stable_requests": 0}, "error_rate_delta", Verdict.PENDING),
        # Signals some models lack: missing is skipped.
        ({"prediction_js": None}, "prediction_js", Verdict.SKIPPED),
        ({"input_drift_share": None}, "input_drift_share", Verdict.SKIPPED),
        # Latency over its limit, past the floor's 1 ms of slack, without the
        # samples to prove it only holds (test_gates.py fails it on evidence).
        ({"canary_p50_ms": 13.1}, "model_p50_ratio", Verdict.PENDING),
        ({"canary_p99_ms": 43.1}, "model_p99_ratio", Verdict.PENDING),
        (
            {"canary_p99_ms": 501.0, "stable_p99_ms": 400.0},
            "e2e_p99_ms",
            Verdict.PENDING,
        ),
        # Failing values.
        ({"canary_error_rate": 0.2}, "error_rate_delta", Verdict.FAIL),
        ({"prediction_js": 0.1001}, "prediction_js", Verdict.FAIL),
        ({"prediction_chi2_pvalue": 0.0001}, "prediction_chi2_pvalue", Verdict.FAIL),
        ({"input_drift_share": 0.3}, "input_drift_share", Verdict.FAIL),
        ({"agreement": 0.8}, "agreement", Verdict.FAIL),
        # Thresholds are inclusive; a ratio has the floor as slack.
        ({"canary_p50_ms": 12.0}, "model_p50_ratio", Verdict.PASS),
        ({"canary_p50_ms": 13.0}, "model_p50_ratio", Verdict.PASS),
        ({"canary_p99_ms": 43.0}, "model_p99_ratio", Verdict.PASS),
        ({"prediction_js": 0.1}, "prediction_js", Verdict.PASS),
        ({"agreement": 0.9}, "agreement", Verdict.PASS),
    ],
)
def test_gate_verdicts(changes: dict[str, Any], gate: str, verdict: Verdict) -> None:
    assert verdicts(healthy(**changes))[gate] is verdict


def test_error_rate_needs_evidence_to_fail() -> None:
    # 2 errors in 100 against stable's 0.1%: over the delta, but within noise.
    noisy = healthy(canary_error_rate=0.02)
    (result,) = [
        r for r in evaluate_gates(noisy, SPEC.gates) if r.name.startswith("error")
    ]
    assert result.verdict is Verdict.PENDING
    assert result.value == pytest.approx(0.019)
    assert "not yet" in result.detail
    # 10 of 20 failing is evidence already.
    assert verdicts(healthy(20, canary_error_rate=0.5))["error_rate_delta"] is (
        Verdict.FAIL
    )


def test_agreement_is_pending_in_shadow_until_measured() -> None:
    assert verdicts(healthy(), shadow=True)["agreement"] is Verdict.PENDING
    measured = healthy(shadow_pairs=500, agreement=0.95)
    assert verdicts(measured, shadow=True)["agreement"] is Verdict.PASS


def test_gate_result_reads_as_a_sentence() -> None:
    results = evaluate_gates(healthy(prediction_js=0.3256), SPEC.gates)
    described = {r.name: r.describe() for r in results}
    assert described["prediction_js"] == "prediction_js 0.3256 > max 0.1"
    assert (
        described["model_p50_ratio"]
        == "model_p50_ratio 1 <= max 1.5 (end to end: no model time on both)"
    )
    pending = evaluate_gates(healthy(canary_p99_ms=None), SPEC.gates)
    assert "e2e_p99_ms pending: no canary p99 yet" in [r.describe() for r in pending]
    (js,) = [r for r in results if r.name == "prediction_js"]
    assert (js.passed, js.to_dict()["passed"], js.to_dict()["verdict"]) == (
        False,
        False,
        "fail",
    )


def test_window_comparison_rejects_impossible_numbers() -> None:
    with pytest.raises(ValueError, match="error rates"):
        healthy(canary_error_rate=1.5)
    with pytest.raises(ValueError, match="counts"):
        healthy(-1)
    with pytest.raises(ValueError, match="finite"):
        healthy(canary_p99_ms=math.inf)
    with pytest.raises(ValueError, match="finite"):
        healthy(prediction_js=math.nan)


# --- the state machine ----------------------------------------------------------


def test_start_is_pending_at_weight_zero() -> None:
    state, events = start("digits", "v2", "v1", SPEC, 5.0)
    assert (state.phase, state.weight, state.step_index) == (Phase.PENDING, 0, None)
    assert traffic_weights(state) == {"v2": 0.0, "v1": 100.0}
    assert kinds(events) == ["rollout_started"]
    assert events[0].reason == "rollout of v2 over v1: 5% -> 25% -> 50% -> 100%"
    with pytest.raises(InvalidTransition, match="both 'v1'"):
        start("digits", "v1", "v1", SPEC, 5.0)


def test_first_step_once_the_canary_is_ready() -> None:
    clock = FakeClock()
    state, events = at_first_step(clock)
    assert (state.phase, state.step_index, state.weight) == (Phase.CANARY, 0, 5)
    assert state.step_started_at == clock.now
    assert kinds(events) == ["step_advanced"]
    assert traffic_weights(state) == {"v2": 5.0, "v1": 95.0}
    assert shadow_percent(state) == 0


def test_waits_for_min_requests_even_when_long_past_min_step() -> None:
    clock = FakeClock()
    state, _ = at_first_step(clock)
    # Failing gates on too few requests do not roll back either.
    for window in (healthy(99), healthy(99, prediction_js=0.5)):
        after, events = step(state, SPEC, window, clock.advance(120))
        assert (after.phase, after.weight, events) == (Phase.CANARY, 5, ())


def test_waits_for_min_step_s_before_promoting() -> None:
    clock = FakeClock()
    state, _ = at_first_step(clock)
    held, events = step(state, SPEC, healthy(500), clock.advance(29.9))
    assert (held.weight, events) == (5, ())
    assert all(r.verdict is not Verdict.FAIL for r in held.gates)
    advanced, events = step(held, SPEC, healthy(500), clock.advance(0.1))
    assert (advanced.phase, advanced.step_index, advanced.weight) == (
        Phase.CANARY,
        1,
        25,
    )
    assert advanced.step_started_at == clock.now
    assert kinds(events) == ["step_advanced"]
    assert events[0].reason == "gates passed on 500 canary requests over 30s"
    assert {g["name"] for g in events[0].to_dict()["gates"]} >= {"model_p50_ratio"}


def fail_until_rolled_back(
    state: RolloutState,
    window: WindowComparison,
    clock: FakeClock,
    spec: RolloutSpec = SPEC,
) -> tuple[RolloutState, tuple[Event, ...]]:
    """Step on a failing ``window`` until the rollout is rolled back, checking
    that it holds, and says so, on each evaluation before the last."""
    for count in range(1, spec.failure_threshold):
        state, events = step(state, spec, window, clock.advance(5))
        assert (state.phase, state.consecutive_failures, events) == (
            Phase.CANARY if state.step_index is not None else Phase.SHADOW,
            count,
            (),
        )
        failing = [r for r in state.gates if r.verdict is Verdict.FAIL]
        assert failing
        assert all(
            r.detail.endswith(f"failing {count} of {spec.failure_threshold}")
            for r in failing
        )
    return step(state, spec, window, clock.advance(5))


def test_failing_gate_rolls_back_as_soon_as_requests_suffice() -> None:
    clock = FakeClock()
    state, _ = at_first_step(clock)
    bad = healthy(100, prediction_js=0.33)
    # The second failing evaluation, 10 s in: before min_step_s.
    after, events = fail_until_rolled_back(state, bad, clock)
    assert (after.phase, after.weight, after.consecutive_failures) == (
        Phase.ROLLED_BACK,
        0,
        2,
    )
    assert kinds(events) == ["rolled_back"]
    assert events[0].reason == (
        "gates failed on 100 canary requests, 2 evaluations in a row: "
        "prediction_js 0.33 > max 0.1"
    )
    assert traffic_weights(after) == {"v2": 0.0, "v1": 100.0}


def test_clear_error_rate_rolls_back_before_min_requests() -> None:
    clock = FakeClock()
    state, _ = at_first_step(clock)
    # It acts before the request count, but waits for the failure count too.
    window = healthy(20, canary_error_rate=0.5)
    after, events = fail_until_rolled_back(state, window, clock)
    assert after.phase is Phase.ROLLED_BACK
    assert "error_rate_delta 0.499 > max 0.01" in events[0].reason


def test_noisy_errors_neither_roll_back_nor_promote() -> None:
    clock = FakeClock()
    state, _ = at_first_step(clock)
    noisy = healthy(100, canary_error_rate=0.02)
    after, events = step(state, SPEC, noisy, clock.advance(60))
    assert (after.phase, after.weight, events) == (Phase.CANARY, 5, ())


def _tail_times(values: np.ndarray, factor: float) -> np.ndarray:
    """``values`` with their slowest 10% ``factor`` times slower."""
    slower = values.copy()
    slower[values > np.quantile(values, 0.9)] *= factor
    return slower


@pytest.mark.parametrize(
    "window",
    [
        # Latency gates fail on evidence: 200 canary requests against 3800.
        measured(grid(200, 16.0), grid(3800, 8.0)),
        measured(_tail_times(grid(200, 8.0), 3), grid(3800, 8.0)),
        # Over the 500 ms SLO while stable keeps it (and within the ratios).
        measured(grid(200, 600.0, 0.05), grid(3800, 420.0, 0.05)),
        healthy(200, canary_error_rate=0.05),
        healthy(200, prediction_js=0.2),
        healthy(200, input_drift_share=0.5),
    ],
    ids=["p50", "p99", "ceiling", "errors", "predictions", "inputs"],
)
def test_each_gate_can_roll_back(window: WindowComparison) -> None:
    clock = FakeClock()
    state, _ = at_first_step(clock)
    clock.advance(25)
    after, events = fail_until_rolled_back(state, window, clock)
    assert after.phase is Phase.ROLLED_BACK
    failed = [r.name for r in after.gates if r.verdict is Verdict.FAIL]
    assert len(failed) == 1
    assert failed[0] in events[0].reason


@pytest.mark.parametrize(
    "changes",
    [{"canary_p99_ms": None}, {"stable_p50_ms": None}, {"stable_requests": 0}],
)
def test_pending_gate_never_promotes_and_flags_a_stall(changes: dict[str, Any]) -> None:
    clock = FakeClock()
    state, _ = at_first_step(clock)
    after, events = step(state, SPEC, healthy(500, **changes), clock.advance(599))
    assert (after.weight, after.stalled, events) == (5, False, ())
    after, events = step(after, SPEC, healthy(500, **changes), clock.advance(1))
    assert (after.weight, after.stalled, events) == (5, True, ())
    # The flag clears as soon as the step moves on.
    after, _ = step(after, SPEC, healthy(500), clock.advance(1))
    assert (after.weight, after.stalled) == (25, False)


def test_skipped_gates_do_not_block() -> None:
    clock = FakeClock()
    state, _ = at_first_step(clock)
    window = healthy(100, prediction_js=None, input_drift_share=None)
    after, _ = step(state, SPEC, window, clock.advance(30))
    assert after.weight == 25


def test_full_rollout_to_promotion() -> None:
    clock = FakeClock()
    state, events = start("digits", "v2", "v1", SPEC, clock.now)
    seen = kinds(events)
    weights = [state.weight]
    while not state.finished:
        state, events = step(state, SPEC, healthy(150), clock.advance(30))
        seen += kinds(events)
        weights.append(state.weight)
    assert weights == [0, 5, 25, 50, 100, 100]
    assert seen == ["rollout_started", *["step_advanced"] * 4, "promoted"]
    assert (state.phase, state.stable_version) == (Phase.PROMOTED, "v2")
    assert traffic_weights(state) == {"v2": 100.0}
    assert events[0].stable == "v1"
    assert [entry.weight for entry in state.history] == [0, 5, 25, 50, 100, 100]


@pytest.mark.parametrize("end", [promote, rollback])
def test_terminal_phases_ignore_step(end: Any) -> None:
    clock = FakeClock()
    state, _ = at_first_step(clock)
    finished, _ = end(state, clock.now, "by hand")
    for window in (healthy(1000), healthy(1000, prediction_js=0.9)):
        assert step(finished, SPEC, window, clock.advance(100)) == (finished, ())


def test_pause_freezes_and_resume_restarts_the_window() -> None:
    clock = FakeClock()
    state, _ = at_first_step(clock)
    paused, events = pause(state, clock.advance(1), "investigating")
    assert (paused.phase, paused.paused_from, paused.weight) == (
        Phase.PAUSED,
        Phase.CANARY,
        5,
    )
    assert kinds(events) == ["paused"]
    assert events[0].reason == "operator: investigating"
    for window in (healthy(1000), healthy(1000, prediction_js=0.9)):
        assert step(paused, SPEC, window, clock.advance(100)) == (paused, ())
    resumed, events = resume(paused, clock.advance(1))
    assert (resumed.phase, resumed.weight, resumed.paused_from) == (
        Phase.CANARY,
        5,
        None,
    )
    assert resumed.step_started_at == clock.now
    assert kinds(events) == ["resumed"]
    # The step's time floor counts from the resume.
    held, _ = step(resumed, SPEC, healthy(100), clock.advance(29))
    assert held.weight == 5


SHADOW = RolloutSpec(shadow_percent=10)


def test_shadow_phase_shadows_then_enters_the_first_step() -> None:
    clock = FakeClock()
    state, _ = at_first_step(clock, SHADOW)
    assert (state.phase, state.weight, state.step_index) == (Phase.SHADOW, 0, None)
    assert shadow_percent(state) == 10
    assert traffic_weights(state) == {"v2": 0.0, "v1": 100.0}
    pairs = healthy(600, shadow_pairs=499, agreement=0.95)
    held, events = step(state, SHADOW, pairs, clock.advance(60))
    assert (held.phase, events) == (Phase.SHADOW, ())
    no_agreement = replace(pairs, shadow_pairs=500, agreement=None)
    held, events = step(state, SHADOW, no_agreement, clock.advance(1))
    assert (held.phase, events) == (Phase.SHADOW, ())
    # Paused in shadow keeps shadowing: pause freezes traffic as it is.
    assert shadow_percent(pause(held, clock.now)[0]) == 10
    after, events = step(state, SHADOW, replace(pairs, shadow_pairs=500), clock.now)
    assert (after.phase, after.step_index, after.weight) == (Phase.CANARY, 0, 5)
    assert shadow_percent(after) == 0
    assert kinds(events) == ["step_advanced"]


def test_shadow_disagreement_rolls_back_before_users_see_the_canary() -> None:
    clock = FakeClock()
    state, _ = at_first_step(clock, SHADOW)
    bad = healthy(500, shadow_pairs=500, agreement=0.48)
    after, events = fail_until_rolled_back(state, bad, clock, SHADOW)
    assert (after.phase, after.weight) == (Phase.ROLLED_BACK, 0)
    assert "agreement 0.48 < min 0.9" in events[0].reason
    assert shadow_percent(after) == 0


# --- consecutive failures -------------------------------------------------------

BAD_JS = healthy(100, prediction_js=0.33)


@pytest.mark.parametrize("threshold", [1, 2, 4])
def test_the_threshold_th_failing_evaluation_rolls_back(threshold: int) -> None:
    spec = RolloutSpec(failure_threshold=threshold)
    clock = FakeClock()
    state, _ = at_first_step(clock, spec)
    # Long past min_step_s: a held step still never promotes.
    clock.advance(60)
    after, events = fail_until_rolled_back(state, BAD_JS, clock, spec)
    assert (after.phase, after.consecutive_failures) == (Phase.ROLLED_BACK, threshold)
    in_a_row = f", {threshold} evaluations in a row" if threshold > 1 else ""
    assert events[0].reason == (
        f"gates failed on 100 canary requests{in_a_row}: prediction_js 0.33 > max 0.1"
    )


@pytest.mark.parametrize(
    "calm",
    [healthy(100), healthy(100, canary_p99_ms=None), healthy(99, prediction_js=0.5)],
    ids=["passing", "pending", "failing-on-too-few-requests"],
)
def test_an_evaluation_without_a_failing_gate_resets_the_count(
    calm: WindowComparison,
) -> None:
    clock = FakeClock()
    state, _ = at_first_step(clock)
    for _ in range(2):
        state, _ = step(state, THREE, BAD_JS, clock.advance(5))
    assert state.consecutive_failures == 2
    state, events = step(state, THREE, calm, clock.advance(5))  # 15 s: no promotion
    assert (state.phase, state.weight, state.consecutive_failures, events) == (
        Phase.CANARY,
        5,
        0,
        (),
    )
    after, _ = fail_until_rolled_back(state, BAD_JS, clock, THREE)
    assert after.phase is Phase.ROLLED_BACK


def test_a_new_step_window_resets_the_count() -> None:
    clock = FakeClock()
    state, _ = at_first_step(clock)
    state, _ = step(state, THREE, BAD_JS, clock.advance(5))
    state, _ = step(state, THREE, BAD_JS, clock.advance(5))
    assert set_weight(state, 25, clock.now)[0].consecutive_failures == 0
    paused, _ = pause(state, clock.now)
    assert paused.consecutive_failures == 2
    assert resume(paused, clock.now)[0].consecutive_failures == 0


def test_the_count_survives_a_restart() -> None:
    clock = FakeClock()
    state, _ = at_first_step(clock)
    for _ in range(2):
        state, _ = step(state, THREE, BAD_JS, clock.advance(5))
    saved = json.loads(json.dumps(state.to_dict()))
    assert saved["consecutive_failures"] == 2
    assert saved["gates"][4]["detail"] == "failing 2 of 3"
    resumed = RolloutState.from_dict(saved)
    assert resumed == state
    after, events = step(resumed, THREE, BAD_JS, clock.advance(5))
    assert (after.phase, kinds(events)) == (Phase.ROLLED_BACK, ["rolled_back"])


def test_a_state_saved_before_the_count_and_timings_still_loads() -> None:
    clock = FakeClock()
    state, _ = at_first_step(clock)
    state, _ = step(state, SPEC, healthy(50), clock.advance(5))
    saved = state.to_dict()
    old = {k: v for k, v in saved.items() if k != "consecutive_failures"}
    old["gates"] = [
        {k: v for k, v in gate.items() if k != "timing"} for gate in saved["gates"]
    ]
    loaded = RolloutState.from_dict(old)
    assert loaded.consecutive_failures == 0
    assert {g.timing for g in loaded.gates} == {None}
    assert loaded == replace(
        state, gates=tuple(replace(g, timing=None) for g in state.gates)
    )


# --- operator actions -----------------------------------------------------------


def test_operator_promote_and_rollback() -> None:
    clock = FakeClock()
    state, _ = at_first_step(clock)
    promoted, events = promote(state, clock.now, "looks good")
    assert (promoted.phase, promoted.weight, promoted.stable_version) == (
        Phase.PROMOTED,
        100,
        "v2",
    )
    assert (events[0].kind, events[0].reason) == ("promoted", "operator: looks good")
    with pytest.raises(InvalidTransition, match=r"cannot promote .* promoted"):
        promote(promoted, clock.now, "again")
    with pytest.raises(InvalidTransition, match="roll back"):
        rollback(promoted, clock.now, "too late")
    rolled, events = rollback(pause(state, clock.now)[0], clock.now, "bad")
    assert (rolled.phase, rolled.weight, rolled.paused_from) == (
        Phase.ROLLED_BACK,
        0,
        None,
    )
    # After a rollback only an operator moves it on: here by promoting anyway.
    assert promote(rolled, clock.now, "override")[0].phase is Phase.PROMOTED
    with pytest.raises(InvalidTransition):
        rollback(rolled, clock.now, "again")


@pytest.mark.parametrize("action", [pause, resume])
def test_pause_and_resume_refuse_the_wrong_phase(action: Any) -> None:
    clock = FakeClock()
    state, _ = at_first_step(clock)
    rolled, _ = rollback(state, clock.now, "bad")
    with pytest.raises(InvalidTransition):
        action(rolled, clock.now)
    with pytest.raises(InvalidTransition, match="resume"):
        resume(state, clock.now)


@pytest.mark.parametrize(
    ("weight", "index", "next_weight"),
    [(0, 0, 5), (5, 0, 25), (10, 1, 25), (25, 1, 50), (60, 3, 100), (100, 3, 100)],
)
def test_set_weight_moves_to_the_matching_or_next_step(
    weight: float, index: int, next_weight: float
) -> None:
    clock = FakeClock()
    state, _ = at_first_step(clock)
    moved, events = set_weight(state, weight, clock.advance(1))
    assert (moved.phase, moved.weight, moved.step_index) == (
        Phase.CANARY,
        weight,
        index,
    )
    assert moved.step_started_at == clock.now
    assert kinds(events) == ["weight_set"]
    after, _ = step(moved, SPEC, healthy(100), clock.advance(30))
    assert after.weight == next_weight
    assert after.phase is (Phase.PROMOTED if weight == 100 else Phase.CANARY)


@pytest.mark.parametrize("weight", [-1, 100.5, math.nan])
def test_set_weight_validates(weight: float) -> None:
    state, _ = at_first_step(FakeClock())
    with pytest.raises(ValueError, match=r"\[0, 100\]"):
        set_weight(state, weight, 0)


def test_set_weight_from_shadow_paused_and_terminal() -> None:
    clock = FakeClock()
    shadow, _ = at_first_step(clock, SHADOW)
    moved, _ = set_weight(shadow, 25, clock.now)
    assert (moved.phase, shadow_percent(moved)) == (Phase.CANARY, 0)
    paused, _ = pause(shadow, clock.now)
    moved, _ = set_weight(paused, 25, clock.now)
    assert (moved.phase, moved.paused_from, moved.weight) == (
        Phase.PAUSED,
        Phase.CANARY,
        25,
    )
    assert resume(moved, clock.now)[0].phase is Phase.CANARY
    with pytest.raises(InvalidTransition):
        set_weight(rollback(shadow, clock.now, "x")[0], 25, clock.now)


# --- persistence and events -----------------------------------------------------


def test_state_round_trips_through_json() -> None:
    clock = FakeClock()
    state, _ = at_first_step(clock, SHADOW)
    state, _ = step(state, SHADOW, healthy(10, canary_p99_ms=None), clock.advance(5))
    text = json.dumps(state.to_dict())
    assert RolloutState.from_dict(json.loads(text)) == state


def test_a_state_with_an_infinite_gate_value_is_still_json() -> None:
    # A ratio over a stable latency of zero is inf; /-/rollouts must still answer.
    clock = FakeClock()
    state, _ = at_first_step(clock)
    infinite = GateResult("model_p50_ratio", math.inf, 1.5, "max", Verdict.PASS)
    state = replace(state, gates=(infinite,))
    data = json.loads(json.dumps(state.to_dict(), allow_nan=False))
    assert data["gates"][0]["value"] is None
    assert RolloutState.from_dict(data).gates[0].value is None


def test_from_dict_refuses_another_format() -> None:
    data = at_first_step(FakeClock())[0].to_dict()
    assert data["format"] == 2
    with pytest.raises(ValueError, match="format 3"):
        RolloutState.from_dict({**data, "format": 3})
    with pytest.raises(ValueError):
        RolloutState.from_dict({**data, "phase": "sideways"})


def test_event_to_dict_is_the_webhook_body() -> None:
    clock = FakeClock()
    state, _ = at_first_step(clock)
    _, events = fail_until_rolled_back(state, healthy(100, prediction_js=0.3), clock)
    body = events[0].to_dict()
    assert body["kind"] in EVENT_KINDS
    assert {k: body[k] for k in ("kind", "model", "version", "stable", "phase")} == {
        "kind": "rolled_back",
        "model": "digits",
        "version": "v2",
        "stable": "v1",
        "phase": "rolled_back",
    }
    assert (body["weight"], body["ts"]) == (0, clock.now)
    failed = [g for g in body["gates"] if g["passed"] is False]
    assert [g["name"] for g in failed] == ["prediction_js"]
    json.dumps(body)


# --- defaults against the rollout simulation ------------------------------------


def test_defaults_meet_the_simulated_targets() -> None:
    """A few seeded runs of loadtest/sim_rollout.py at 50 requests/s."""
    for run in range(10):
        good = simulate(np.random.default_rng([7, run]), SPEC, IDENTICAL, 50)
        assert good.phase is Phase.PROMOTED
        bad = simulate(np.random.default_rng([8, run]), SPEC, BAD_V3, 50)
        assert bad.phase is Phase.ROLLED_BACK
        assert (bad.canary_requests <= 500, bad.seconds <= 60) == (True, True)
        assert bad.failed_gates == ("prediction_js",)


# --- properties -----------------------------------------------------------------


def _maybe(values: list[float]) -> st.SearchStrategy[float | None]:
    return st.none() | st.sampled_from(values) | st.floats(0, 1000)


any_windows = st.builds(
    WindowComparison,
    canary_requests=st.integers(0, 300),
    stable_requests=st.integers(0, 3000),
    canary_error_rate=st.sampled_from([0.0, 0.0, 0.001, 0.02, 0.6]) | st.floats(0, 1),
    stable_error_rate=st.sampled_from([0.0, 0.001]),
    canary_p50_ms=_maybe([8.0, 8.0, 9.0, 20.0]),
    canary_p99_ms=_maybe([20.0, 20.0, 25.0, 900.0]),
    stable_p50_ms=st.sampled_from([8.0, 8.0, 0.0]) | st.none(),
    stable_p99_ms=st.sampled_from([20.0, 20.0]) | st.none(),
    prediction_js=st.none() | st.sampled_from([0.01, 0.02, 0.3]) | st.floats(0, 1),
    prediction_chi2_pvalue=st.none() | st.floats(0, 1),
    input_drift_share=st.none() | st.sampled_from([0.0, 0.6]) | st.floats(0, 1),
    shadow_pairs=st.integers(0, 1000),
    agreement=st.none() | st.sampled_from([0.95, 0.5]) | st.floats(0, 1),
)
healthy_windows = st.builds(
    healthy,
    st.integers(0, 700),
    shadow_pairs=st.integers(0, 700),
    agreement=st.sampled_from([0.95, None]),
    prediction_js=st.sampled_from([0.02, None]),
)
# Latency failing on evidence needs samples: a few windows that carry them.
sampled_windows = st.sampled_from(
    [
        measured(grid(200, 14.0), grid(3800, 8.0)),
        measured(grid(300, 8.0), grid(3000, 8.0), "model"),
        measured(grid(50, 9.0), grid(1000, 8.0), "model"),
    ]
)
# Mostly healthy, so that runs reach promotion, with anything mixed in.
windows = st.one_of(
    healthy_windows, healthy_windows, healthy_windows, any_windows, sampled_windows
)


@st.composite
def specs(draw: st.DrawFn) -> RolloutSpec:
    inner = draw(st.lists(st.floats(1, 99), max_size=4, unique=True))
    return RolloutSpec(
        steps=(*sorted(inner), 100.0),
        shadow_percent=draw(st.none() | st.just(10.0)),
        shadow_min_pairs=draw(st.integers(1, 600)),
        min_requests_per_step=draw(st.integers(1, 200)),
        min_step_s=draw(st.floats(0, 60)),
        failure_threshold=draw(st.integers(1, 4)),
        gates=GateSpec(min_prediction_chi2_pvalue=draw(st.none() | st.just(0.01))),
    )


ticks = st.lists(st.tuples(st.floats(0, 90), windows), max_size=30)


@settings(max_examples=200, deadline=None)
@given(specs(), ticks)
def test_step_invariants(
    spec: RolloutSpec, sequence: list[tuple[float, WindowComparison]]
) -> None:
    clock = FakeClock()
    state, _ = at_first_step(clock, spec)
    for dt, window in sequence:
        now = clock.advance(dt)
        after, events = step(state, spec, window, now)
        moved = (after.phase, after.weight) != (state.phase, state.weight)
        assert bool(events) == moved
        in_shadow = state.phase is Phase.SHADOW
        seen = window.shadow_pairs if in_shadow else window.canary_requests
        needed = spec.shadow_min_pairs if in_shadow else spec.min_requests_per_step
        results = evaluate_gates(window, spec.gates, shadow=in_shadow)
        if state.phase is Phase.PAUSED or state.finished:
            assert (after, events) == (state, ())
        if after.weight < state.weight:
            # The weight only ever drops to 0, by rolling back.
            assert (after.phase, after.weight) == (Phase.ROLLED_BACK, 0)
        if moved and after.phase is not Phase.ROLLED_BACK:
            # Every advance, promotion included, rests on enough data, enough
            # time and every gate passed or skipped.
            assert seen >= needed
            assert now - state.step_started_at >= spec.min_step_s
            assert all(r.verdict in (Verdict.PASS, Verdict.SKIPPED) for r in results)
            if after.phase is Phase.CANARY and state.phase is Phase.CANARY:
                assert after.weight == min(s for s in spec.steps if s > state.weight)
            if after.phase is Phase.PROMOTED:
                assert state.weight == 100
        if after.phase is Phase.ROLLED_BACK and state.phase is not Phase.ROLLED_BACK:
            failed = {r.name for r in results if r.verdict is Verdict.FAIL}
            assert failed
            if seen < needed:
                assert "error_rate_delta" in failed
        if state.phase in (Phase.SHADOW, Phase.CANARY):
            # The count grows on each evaluation with a gate failing on enough
            # data, resets on any other, and a rollback needs it at threshold.
            failing = any(
                r.verdict is Verdict.FAIL
                and (seen >= needed or r.name == "error_rate_delta")
                for r in results
            )
            count = state.consecutive_failures + 1 if failing else 0
            assert after.consecutive_failures == count
            rolled_back = after.phase is Phase.ROLLED_BACK
            assert rolled_back == (count >= spec.failure_threshold)
        assert RolloutState.from_dict(json.loads(json.dumps(after.to_dict()))) == after
        state = after


_ACTIONS = ["step", "pause", "resume", "promote", "rollback", "set_weight"]


@settings(max_examples=100, deadline=None)
@given(
    specs(),
    st.lists(
        st.tuples(st.sampled_from(_ACTIONS), st.floats(0, 100), windows),
        max_size=25,
    ),
)
def test_operator_actions_keep_state_consistent_and_persistable(
    spec: RolloutSpec, actions: list[tuple[str, float, WindowComparison]]
) -> None:
    clock = FakeClock()
    state, _ = start("digits", "v2", "v1", spec, clock.now)
    for action, number, window in actions:
        now = clock.advance(number / 2)
        try:
            if action == "step":
                state, _ = step(state, spec, window, now)
            elif action == "set_weight":
                state, _ = set_weight(state, number, now)
            elif action in ("pause", "resume"):
                state, _ = (pause if action == "pause" else resume)(state, now)
            else:
                state, _ = (promote if action == "promote" else rollback)(
                    state, now, "operator"
                )
        except InvalidTransition:
            continue
        weights = traffic_weights(state)
        assert sum(weights.values()) == pytest.approx(100)
        assert (state.phase is Phase.PAUSED) == (state.paused_from is not None)
        if state.phase is Phase.PROMOTED:
            assert state.stable_version == "v2"
        assert 0 <= shadow_percent(state) <= 100
        assert RolloutState.from_dict(json.loads(json.dumps(state.to_dict()))) == state


@pytest.mark.parametrize(
    ("pvalue", "verdict"),
    [(None, Verdict.FAIL), (0.001, Verdict.FAIL), (0.2, Verdict.PENDING)],
)
def test_prediction_drift_fails_only_with_evidence(
    pvalue: float | None, verdict: Verdict
) -> None:
    # 40 requests of 10 classes: a JS of 0.15 is within small-sample bias.
    window = WindowComparison(
        canary_requests=40,
        stable_requests=400,
        canary_error_rate=0.0,
        stable_error_rate=0.0,
        prediction_js=0.15,
        prediction_chi2_pvalue=pvalue,
    )
    (result,) = [
        g for g in evaluate_gates(window, GateSpec()) if g.name == "prediction_js"
    ]
    assert result.verdict is verdict


def test_from_dict_reads_format_1_with_mirror_percent() -> None:
    # Until 0.3.0: a rollout saved before shadow_percent had its name resumes.
    clock = FakeClock()
    state, _ = start("digits", "v2", "v1", SHADOW, clock.now)
    data = state.to_dict()
    old = {k: v for k, v in data.items() if k != "shadow_percent"}
    old |= {"format": 1, "mirror_percent": data["shadow_percent"]}
    assert RolloutState.from_dict(old) == state
    assert state.shadow_percent == SHADOW.shadow_percent


def test_live_gates_speak_the_shared_vocabulary() -> None:
    every = GateSpec(min_prediction_chi2_pvalue=0.01)
    model_timed = healthy(
        canary_model_p50_ms=4.0,
        stable_model_p50_ms=4.0,
        canary_model_p99_ms=9.0,
        stable_model_p99_ms=9.0,
    )
    results = evaluate_gates(model_timed, every)
    assert [r.name for r in results] == [
        "model_p50_ratio",
        "model_p99_ratio",
        "e2e_p99_ms",
        "error_rate_delta",
        "prediction_js",
        "prediction_chi2_pvalue",
        "input_drift_share",
        "agreement",
    ]
    assert {r.name for r in results} <= set(GATE_NAMES)
    # Both versions timed by their replicas: the ratio is model time, no note.
    assert results[0].describe() == "model_p50_ratio 1 <= max 1.5"
