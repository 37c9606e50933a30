"""The latency gates: they pass on the point estimate and fail only on evidence.

Exact cases on :class:`ExactSample` (no sketch error), then the same gates on
the Validator's sketches of heavy-tailed samples: a canary drawn from stable's
own distribution never fails, one 3x slower always does.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rayfleet.platform.config.rollout import GateSpec
from rayfleet.platform.rollout import (
    GateResult,
    Verdict,
    WindowComparison,
    evaluate_gates,
)
from rayfleet.platform.rollout.quantile_bounds import lower_rank, upper_rank
from tests.unit.platform.rollout.latency_samples import (
    ExactSample,
    grid,
    heavy,
    measured,
)

LATENCY_GATES = ("model_p50_ratio", "model_p99_ratio", "e2e_p99_ms")
STABLE = range(1, 1001)  # 1, 2, ..., 1000 ms: order statistic k is k ms
NO_CEILING = GateSpec(max_e2e_p99_ms=None)


def gate(results: tuple[GateResult, ...], name: str) -> GateResult:
    (found,) = [r for r in results if r.name == name]
    return found


# -- exact expectations ---------------------------------------------------------


def test_a_ratio_fails_when_the_bounds_prove_it() -> None:
    # Canary 1001..1300 ms: p50 1150 against stable's 500, 2.3x. At 99.5% each,
    # the canary's p50 is above its 128th value and stable's below its 542nd.
    assert (lower_rank(300, 0.5, 0.995), upper_rank(1000, 0.5, 0.995)) == (128, 542)
    window = measured(range(1001, 1301), STABLE, "model", exact=True)
    p50 = gate(evaluate_gates(window, NO_CEILING), "model_p50_ratio")
    assert p50 == GateResult(
        "model_p50_ratio",
        1150 / 500,
        1.5,
        "max",
        Verdict.FAIL,
        "over the limit at 99% confidence: canary p50 >= 1128 ms, stable p50 <= 542 ms",
        "model",
    )
    assert p50.to_dict()["timing"] == "model"
    assert gate(evaluate_gates(window, NO_CEILING), "model_p99_ratio").verdict is (
        Verdict.PASS
    )


def test_a_ratio_over_the_limit_but_not_proven_holds() -> None:
    # 1.6x everywhere: over 1.5 at p50, but the canary's lower bound (1.6 x its
    # 459th value) is under 1.5 x stable's upper bound.
    window = measured([1.6 * v for v in STABLE], STABLE, "model", exact=True)
    p50 = gate(evaluate_gates(window, NO_CEILING), "model_p50_ratio")
    assert (p50.verdict, p50.value) == (Verdict.PENDING, pytest.approx(1.6))
    assert p50.detail == (
        "over the limit but not yet at 99% confidence: canary p50 >= 734 ms, "
        "stable p50 <= 542 ms"
    )


def test_a_higher_confidence_asks_for_more_evidence() -> None:
    window = measured([2.0 * v for v in STABLE], STABLE, "model", exact=True)
    sure = GateSpec(max_e2e_p99_ms=None, latency_confidence=0.99)
    surer = GateSpec(max_e2e_p99_ms=None, latency_confidence=0.999999)
    assert gate(evaluate_gates(window, sure), "model_p50_ratio").verdict is (
        Verdict.FAIL
    )
    held = gate(evaluate_gates(window, surer), "model_p50_ratio")
    assert held.verdict is Verdict.PENDING
    assert "not yet at 100% confidence" in held.detail


def test_the_ceiling_fails_on_the_canary_lower_bound() -> None:
    # p99 of 300 values 1001..1300 is 1297 ms; at 99% it is above the 292nd.
    assert lower_rank(300, 0.99, 0.99) == 292
    window = measured(range(1001, 1301), range(1, 301), exact=True)
    ceiling = gate(evaluate_gates(window, GateSpec()), "e2e_p99_ms")
    assert ceiling == GateResult(
        "e2e_p99_ms",
        1297,
        500,
        "max",
        Verdict.FAIL,
        "over the limit at 99% confidence: canary p99 >= 1292 ms",
        "end_to_end",
    )
    # Just over the ceiling on the estimate, not on the bound: it holds.
    close = measured(range(401, 601), range(1, 201), exact=True)
    held = gate(evaluate_gates(close, GateSpec(max_e2e_p99_ms=595)), "e2e_p99_ms")
    assert (held.value, held.verdict) == (598, Verdict.PENDING)
    assert held.detail == (
        "over the limit but not yet at 99% confidence: canary p99 >= 594 ms"
    )


def test_the_ceiling_holds_when_stable_is_over_it_too() -> None:
    # Saturation puts both versions over the SLO: that is overload, and rolling
    # the canary back would not cure it. The ratio gates judge the versions.
    window = measured(range(1001, 1301), range(901, 1201), exact=True)
    held = gate(evaluate_gates(window, GateSpec()), "e2e_p99_ms")
    assert (held.value, held.verdict) == (1297, Verdict.PENDING)
    assert held.detail == (
        "stable's p99 is over it too (1197 ms): overload; canary p99 >= 1292 ms"
    )


def _one_hop_away(canary_model: range) -> WindowComparison:
    """Canary 1001..1300 ms end to end, over the 500 ms SLO that stable keeps
    (0.4..400 ms over 1000 requests); model times: stable 0.3..300 ms, the
    canary's as given."""
    stable_e2e = [0.4 * v for v in STABLE]
    window = measured(range(1001, 1301), stable_e2e, exact=True)
    c, s = ExactSample(canary_model), ExactSample(0.3 * v for v in STABLE)
    return replace(
        window,
        canary_model_p50_ms=c.quantile(0.5),
        stable_model_p50_ms=s.quantile(0.5),
        canary_model_p99_ms=c.quantile(0.99),
        stable_model_p99_ms=s.quantile(0.99),
        canary_model_latency=c,
        stable_model_latency=s,
    )


def test_the_ceiling_holds_when_the_excess_is_outside_the_model() -> None:
    # The model is as fast as stable's: the extra time is the hop, the replica's
    # queue, a neighbour on its cores. Placement, not the model: hold. At 99.5%
    # each, the canary's model p99 is above its 292nd value, stable's below its
    # 998th.
    assert (lower_rank(300, 0.99, 0.995), upper_rank(1000, 0.99, 0.995)) == (292, 998)
    window = _one_hop_away(range(1, 301))
    held = gate(evaluate_gates(window, GateSpec()), "e2e_p99_ms")
    assert (held.value, held.verdict) == (1297, Verdict.PENDING)
    assert held.detail == (
        "canary p99 >= 1292 ms, but its model time is not shown slower than "
        "stable's (canary model p99 >= 292 ms, stable's <= 299 ms): the time is "
        "spent outside the model (the hop, a queue, a busy neighbour); holding"
    )


def test_the_ceiling_fails_when_the_model_is_shown_slower() -> None:
    # Same end-to-end excess, and the canary's model p99 (>= 692 ms) is proven
    # above stable's (<= 299 ms).
    failed = gate(
        evaluate_gates(_one_hop_away(range(401, 701)), GateSpec()), "e2e_p99_ms"
    )
    assert failed.verdict is Verdict.FAIL
    assert failed.detail == "over the limit at 99% confidence: canary p99 >= 1292 ms"


def test_the_ceiling_judges_end_to_end_alone_without_model_times() -> None:
    # A remote runtime has no model time of its own to tell the two apart.
    window = replace(
        _one_hop_away(range(1, 301)),
        canary_model_latency=None,
        stable_model_latency=None,
    )
    failed = gate(evaluate_gates(window, GateSpec()), "e2e_p99_ms")
    assert failed.verdict is Verdict.FAIL


@pytest.mark.parametrize(
    ("canary", "stable", "detail"),
    [
        # One canary request bounds its p99 from below only at 99% (the chance
        # it is below the p99), not the 99.5% each bound of a ratio takes.
        (
            [5000.0],
            STABLE,
            "over the limit; too few requests for a bound at 99% confidence",
        ),
        # 50 stable requests cannot bound a p99 from above: the chance that all
        # are below it is 0.99^50.
        (
            [3000.0] * 500,
            range(1, 51),
            "over the limit; too few requests for a bound at 99% confidence",
        ),
    ],
)
def test_too_few_requests_for_a_bound_hold(
    canary: list[float], stable: range, detail: str
) -> None:
    window = measured(canary, stable, "model", exact=True)
    p99 = gate(evaluate_gates(window, NO_CEILING), "model_p99_ratio")
    assert (p99.verdict, p99.detail) == (Verdict.PENDING, detail)


def test_without_samples_a_latency_over_its_limit_only_holds() -> None:
    window = measured(range(1001, 1301), STABLE, "model", exact=True)
    bare = measured(
        range(1001, 1301),
        STABLE,
        "model",
        exact=True,
        **{
            "canary_latency": None,
            "canary_model_latency": None,
        },
    )
    assert bare == window  # the samples are not part of a window's equality
    results = evaluate_gates(bare, GateSpec())
    for name in ("model_p50_ratio", "e2e_p99_ms"):
        held = gate(results, name)
        assert (held.verdict, held.detail) == (
            Verdict.PENDING,
            "over the limit; no samples to test it on",
        )


def test_the_floor_still_passes_a_fast_canary() -> None:
    window = measured([0.9] * 300, [0.1] * 1000, "model", exact=True)
    p50 = gate(evaluate_gates(window, GateSpec()), "model_p50_ratio")
    assert (p50.verdict, p50.detail) == (
        Verdict.PASS,
        "canary 0.9 ms is under the 1 ms floor",
    )


def test_the_floor_is_slack_over_the_limit() -> None:
    # 2.1 ms against 1.0 ms is over 2x, but within 1 ms of it: scheduling noise
    # at this scale, measured on real Serve (GateSpec.latency_floor_ms).
    window = measured([2.1] * 300, [1.0] * 1000, "model", exact=True)
    p99 = gate(evaluate_gates(window, GateSpec()), "model_p99_ratio")
    assert (p99.verdict, p99.value) == (Verdict.PASS, pytest.approx(2.1))
    assert p99.detail == "within the 1 ms floor of 2x stable's"
    # Past the slack it holds, and fails only when the bounds clear it too.
    over = measured([3.1] * 300, [1.0] * 1000, "model", exact=True)
    failed = gate(evaluate_gates(over, GateSpec()), "model_p99_ratio")
    assert failed.verdict is Verdict.FAIL
    close = measured([2.9] * 300, [1.0] * 1000, "model", exact=True)
    assert gate(evaluate_gates(close, GateSpec()), "model_p99_ratio").verdict is (
        Verdict.PASS
    )


def test_results_say_which_time_they_judged() -> None:
    model = evaluate_gates(measured(grid(300, 8), grid(3000, 8), "model"), GateSpec())
    e2e = evaluate_gates(measured(grid(300, 8), grid(3000, 8)), GateSpec())
    timing = {r.name: r.timing for r in model}
    assert timing == {
        "model_p50_ratio": "model",
        "model_p99_ratio": "model",
        "e2e_p99_ms": "end_to_end",
        "error_rate_delta": None,
        "prediction_js": None,
        "input_drift_share": None,
        "agreement": None,
    }
    assert gate(e2e, "model_p99_ratio").timing == "end_to_end"
    assert gate(e2e, "model_p99_ratio").detail == "end to end: no model time on both"
    assert "timing" not in gate(model, "agreement").to_dict()
    assert gate(model, "e2e_p99_ms").to_dict()["timing"] == "end_to_end"


# -- heavy tails, on the Validator's sketches -----------------------------------


def _latency_verdicts(canary: np.ndarray, stable: np.ndarray) -> dict[str, Verdict]:
    results = evaluate_gates(measured(canary, stable, "model"), GateSpec())
    return {r.name: r.verdict for r in results if r.name in LATENCY_GATES}


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2**32 - 1), st.sampled_from([100, 300, 1000]))
def test_a_canary_like_stable_never_fails_on_a_heavy_tail(seed: int, n: int) -> None:
    rng = np.random.default_rng(seed)
    verdicts = _latency_verdicts(heavy(rng, n), heavy(rng, 2000))
    assert Verdict.FAIL not in verdicts.values()


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 2**32 - 1), st.sampled_from([300, 1000]))
def test_a_canary_three_times_slower_fails(seed: int, n: int) -> None:
    rng = np.random.default_rng(seed)
    verdicts = _latency_verdicts(heavy(rng, n, scale=3.0), heavy(rng, 2000))
    assert verdicts["model_p50_ratio"] is Verdict.FAIL


def test_false_failures_stay_under_the_risk_at_the_limit() -> None:
    # A canary exactly 1.5x slower is at the p50 limit: the worst case the
    # confidence speaks of. Seeded, 300 windows of 300 against 2000 requests.
    rng = np.random.default_rng(14)
    failed = sum(
        _latency_verdicts(heavy(rng, 300, scale=1.5), heavy(rng, 2000))[
            "model_p50_ratio"
        ]
        is Verdict.FAIL
        for _ in range(300)
    )
    assert failed <= 3  # 1% of 300
