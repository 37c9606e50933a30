"""The gates: whether a canary holds up against stable on one window of traffic.

The controller summarises the step's window as a :class:`WindowComparison`;
:func:`evaluate_gates` checks every enabled gate of a
:class:`~rayfleet.platform.config.rollout.GateSpec` on it and answers one
:class:`GateResult` per gate. The state machine (:mod:`.machine`) then decides
what the answers mean for the rollout.

A gate is PENDING while its data is missing or not yet conclusive, and FAILS only
on evidence: the error-rate gate on a one-sided binomial test, the prediction-drift
gate once a chi-square test backs the divergence.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace
from statistics import NormalDist
from typing import Literal

from rayfleet.platform.config.rollout import GateSpec
from rayfleet.platform.thresholds import GateResult, Verdict

__all__ = ["GateResult", "Verdict", "WindowComparison", "evaluate_gates"]


@dataclass(frozen=True, kw_only=True)
class WindowComparison:
    """Canary against stable over the current step's window of traffic.

    The window starts at ``RolloutState.step_started_at``. Rates are fractions in
    [0, 1]; latencies are milliseconds, ``None`` until the validator's sketch can
    give them: ``*_p50_ms``/``*_p99_ms`` end to end at the router,
    ``*_model_p50_ms``/``*_model_p99_ms`` the versions' own inference time. In
    SHADOW the canary's numbers come from shadow requests. At the 100% step stable
    takes no traffic; the validator then supplies stable's numbers from its last
    window with traffic (or from requests shadowed to it). ``prediction_*`` are
    ``None`` for models without a class output, ``input_drift_share`` for
    versions without reference data, and ``agreement`` (top-1 agreement with
    stable on the ``shadow_pairs``) when no requests were shadowed.
    """

    canary_requests: int
    stable_requests: int
    canary_error_rate: float
    stable_error_rate: float
    canary_p50_ms: float | None = None
    canary_p99_ms: float | None = None
    stable_p50_ms: float | None = None
    stable_p99_ms: float | None = None
    canary_model_p50_ms: float | None = None
    canary_model_p99_ms: float | None = None
    stable_model_p50_ms: float | None = None
    stable_model_p99_ms: float | None = None
    prediction_js: float | None = None
    prediction_chi2_pvalue: float | None = None
    input_drift_share: float | None = None
    shadow_pairs: int = 0
    agreement: float | None = None

    def __post_init__(self) -> None:
        counts = (self.canary_requests, self.stable_requests, self.shadow_pairs)
        rates = (self.canary_error_rate, self.stable_error_rate)
        if min(counts) < 0 or not all(0 <= rate <= 1 for rate in rates):
            raise ValueError(
                f"counts must be >= 0 and error rates in [0, 1]: {counts}, {rates}"
            )
        # A NaN would fail every comparison, and so every gate, silently.
        measured = [getattr(self, f.name) for f in fields(self)]
        if any(isinstance(v, float) and not math.isfinite(v) for v in measured):
            raise ValueError(f"statistics must be finite numbers or None: {self}")


def _at_most(name: str, value: float | None, limit: float, missing: str) -> GateResult:
    if value is None:
        return GateResult(name, None, limit, "max", Verdict.PENDING, missing)
    verdict = Verdict.PASS if value <= limit else Verdict.FAIL
    return GateResult(name, value, limit, "max", verdict)


def _optional(
    name: str, value: float | None, limit: float, bound: Literal["max", "min"]
) -> GateResult:
    """A gate on a signal some models lack: no value means skipped, not pending."""
    if value is None:
        return GateResult(name, None, limit, bound, Verdict.SKIPPED, "not measured")
    ok = value <= limit if bound == "max" else value >= limit
    return GateResult(name, value, limit, bound, Verdict.PASS if ok else Verdict.FAIL)


def _latency_ratio(
    name: str,
    canary: float | None,
    stable: float | None,
    limit: float,
    floor: float,
    missing: str,
) -> GateResult:
    if canary is not None and canary < floor:
        detail = f"canary {canary:.3g} ms is under the {floor:g} ms floor"
        return GateResult(
            name, _ratio(canary, stable), limit, "max", Verdict.PASS, detail
        )
    return _at_most(name, _ratio(canary, stable), limit, missing)


def _ratio(canary: float | None, stable: float | None) -> float | None:
    if canary is None or stable is None or stable <= 0:
        return None
    return canary / stable


def _wilson_upper(rate: float, n: int, z: float) -> float:
    """Upper Wilson score bound of a binomial proportion."""
    centre = rate + z * z / (2 * n)
    spread = z * math.sqrt(rate * (1 - rate) / n + z * z / (4 * n * n))
    return min(1.0, (centre + spread) / (1 + z * z / n))


def _binomial_tail(k: int, n: int, p: float) -> float:
    """P(X >= k) for X ~ Binomial(n, p), for k above the mean (terms then shrink)."""
    log_p, log_q = math.log(p), math.log1p(-p)
    total = 0.0
    for i in range(k, n + 1):
        log_term = (
            math.lgamma(n + 1)
            - math.lgamma(i + 1)
            - math.lgamma(n - i + 1)
            + i * log_p
            + (n - i) * log_q
        )
        term = math.exp(log_term)
        total += term
        if term <= total * 1e-12:
            break
    return min(total, 1.0)


def _error_rate(
    comparison: WindowComparison, limit: float, confidence: float
) -> GateResult:
    name = "error_rate_delta"
    canary_n, stable_n = comparison.canary_requests, comparison.stable_requests
    if canary_n == 0 or stable_n == 0:
        missing = "no requests on both versions yet"
        return GateResult(name, None, limit, "max", Verdict.PENDING, missing)
    delta = comparison.canary_error_rate - comparison.stable_error_rate
    if delta <= limit:
        return GateResult(name, delta, limit, "max", Verdict.PASS)
    # The highest canary error rate still within the limit, giving stable the
    # benefit of its own sampling noise; then an exact one-sided binomial test.
    z = NormalDist().inv_cdf(confidence)
    allowed = _wilson_upper(comparison.stable_error_rate, stable_n, z) + limit
    errors = round(comparison.canary_error_rate * canary_n)
    beyond_noise = (
        allowed < 1
        and errors > canary_n * allowed
        and _binomial_tail(errors, canary_n, allowed) < 1 - confidence
    )
    if beyond_noise:
        detail = f"over the limit at {confidence:.0%} confidence"
        return GateResult(name, delta, limit, "max", Verdict.FAIL, detail)
    detail = f"over the limit but not yet at {confidence:.0%} confidence"
    return GateResult(name, delta, limit, "max", Verdict.PENDING, detail)


def evaluate_gates(
    comparison: WindowComparison, gates: GateSpec, *, shadow: bool = False
) -> tuple[GateResult, ...]:
    """Every enabled gate on one window, in a fixed order.

    Missing data: latency gates without both versions' percentiles and the
    error-rate gate without requests on both are PENDING (they apply to every
    model, so promotion waits for them). Prediction drift, input drift and
    agreement are SKIPPED when not measured (no class output, no reference data,
    nothing shadowed), except that in the shadow phase (``shadow=True``)
    agreement is the point and stays PENDING until measured.
    """
    c = comparison
    results: list[GateResult] = []
    floor = gates.latency_floor_ms
    latency_gates = (
        (
            "p50",
            gates.max_model_p50_ratio,
            (c.canary_model_p50_ms, c.stable_model_p50_ms),
            (c.canary_p50_ms, c.stable_p50_ms),
        ),
        (
            "p99",
            gates.max_model_p99_ratio,
            (c.canary_model_p99_ms, c.stable_model_p99_ms),
            (c.canary_p99_ms, c.stable_p99_ms),
        ),
    )
    for quantile, limit, model, end_to_end in latency_gates:
        if limit is None:
            continue
        # A version without a model time of its own (a remote runtime) is timed
        # end to end; the detail says so, since the name promises model time.
        timed = None not in model
        canary, stable = model if timed else end_to_end
        missing = f"no {quantile} for both versions yet"
        name = f"model_{quantile}_ratio"
        result = _latency_ratio(name, canary, stable, limit, floor, missing)
        if not timed and result.value is not None:
            notes = ("end to end: no model time on both", result.detail)
            result = replace(result, detail="; ".join(filter(None, notes)))
        results.append(result)
    if gates.max_e2e_p99_ms is not None:
        limit, missing = gates.max_e2e_p99_ms, "no canary p99 yet"
        results.append(_at_most("e2e_p99_ms", c.canary_p99_ms, limit, missing))
    if gates.max_error_rate_delta is not None:
        limit, confidence = gates.max_error_rate_delta, gates.error_rate_confidence
        results.append(_error_rate(c, limit, confidence))
    if gates.max_prediction_js is not None:
        limit = gates.max_prediction_js
        result = _optional("prediction_js", c.prediction_js, limit, "max")
        pvalue = c.prediction_chi2_pvalue
        weak = pvalue is not None and pvalue > gates.prediction_evidence_pvalue
        if result.verdict is Verdict.FAIL and weak:
            detail = f"chi-square p={pvalue:.3g}: not yet evidence of a shift"
            result = replace(result, verdict=Verdict.PENDING, detail=detail)
        results.append(result)
    if gates.min_prediction_chi2_pvalue is not None:
        limit, value = gates.min_prediction_chi2_pvalue, c.prediction_chi2_pvalue
        results.append(_optional("prediction_chi2_pvalue", value, limit, "min"))
    if gates.max_input_drift_share is not None:
        limit, value = gates.max_input_drift_share, c.input_drift_share
        results.append(_optional("input_drift_share", value, limit, "max"))
    if gates.min_agreement is not None:
        limit, value = gates.min_agreement, c.agreement
        if shadow and value is None:
            pending = Verdict.PENDING, "no shadow pairs yet"
            results.append(GateResult("agreement", None, limit, "min", *pending))
        else:
            results.append(_optional("agreement", value, limit, "min"))
    return tuple(results)
