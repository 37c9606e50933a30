"""The progressive rollout of one canary version against its stable version.

A rollout is a small state machine, driven by pure functions::

    start ─> PENDING ─step─> SHADOW ─gates pass─> CANARY step 0 ─> ... ─> PROMOTED
                      └──────(no shadow)──────────┘      │
                  any live phase ── a gate fails ─> ROLLED_BACK
                  any live phase ── pause ─> PAUSED ── resume ─> where it was

The controller (``deployments/validator.py``) owns everything impure: it reads the
clock, computes a :class:`WindowComparison` over the requests seen since
``state.step_started_at``, calls :func:`step` every ``evaluate_every_s``, applies
:func:`traffic_weights` and :func:`shadow_percent` to the router, persists
:meth:`RolloutState.to_dict` and sends each :class:`Event` to the webhooks.

Decisions this module makes, and why:

- A rollout starts in PENDING at weight 0; the controller calls :func:`step` once
  the canary's replicas are ready, so model loading never counts as step time.
- Promotion (to the next step, or PROMOTED after the last) needs
  ``min_requests_per_step`` canary requests (``shadow_min_pairs`` mirrored pairs in
  SHADOW), ``min_step_s`` in the step, and every enabled gate passed or skipped.
  A pending gate (not enough data) blocks it: no data, no promotion.
- Rollback needs only the request count, not ``min_step_s``: the time floor guards
  against promoting on a lucky short window, while a gate that already fails on
  enough requests only costs users more bad answers if we wait. The error-rate
  gate may roll back even before the request count, because it fails only on a
  one-sided confidence bound that already accounts for the sample size.
- The weight only goes up on its own; only a rollback (to 0) or an operator's
  :func:`set_weight` lowers it. PAUSED and the terminal phases ignore :func:`step`.
- The plan (steps and shadow percent) is fixed when the rollout starts and kept in
  the state, so a redeploy with new steps changes the next rollout, not the running
  one; gate thresholds and timing come from the spec passed to each :func:`step`.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from enum import Enum
from statistics import NormalDist
from typing import Annotated, Any, Literal, get_args

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    NonNegativeFloat,
    PositiveFloat,
    PositiveInt,
    TypeAdapter,
    field_validator,
    model_validator,
)

from rayfleet.platform.thresholds import describe_measurement

__all__ = [
    "EVENT_KINDS",
    "Event",
    "EventKind",
    "GateResult",
    "GateSpec",
    "InvalidTransition",
    "Phase",
    "RolloutSpec",
    "RolloutState",
    "TimelineEntry",
    "Verdict",
    "WindowComparison",
    "evaluate_gates",
    "pause",
    "promote",
    "resume",
    "rollback",
    "set_weight",
    "shadow_percent",
    "start",
    "step",
    "traffic_weights",
]

_Fraction = Annotated[float, Field(ge=0, le=1)]
_Percent = Annotated[float, Field(gt=0, le=100)]

_STATE_FORMAT = 1


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class GateSpec(_Spec):
    """Thresholds a canary must meet against stable; ``None`` turns a gate off.

    Each default is a line most services can hold without tuning; the comments say
    where it comes from. Ratios and deltas compare canary to stable on the same
    window of traffic, so a slow or flaky stable does not block its successor.
    """

    # Leaves room for replica-to-replica noise (cache warmth, busy neighbours)
    # and still catches a median slowdown users feel.
    max_p50_ratio: PositiveFloat | None = 1.5
    # A p99 over ~100 requests rests on one or two of them: a wider band.
    max_p99_ratio: PositiveFloat | None = 2.0
    # The ratios compare the versions' own inference time (the replica's model
    # time) when both have it: where a version runs, in the router or one Ray hop
    # away, is placement, not the version, and a hop alone costs milliseconds.
    # Below this floor a ratio passes whatever it is: 0.05 ms against 0.02 ms is
    # 2.5x, and nothing a user can feel.
    latency_floor_ms: NonNegativeFloat = 1.0
    # Flagger's default request-duration check: an absolute SLO, so a canary
    # cannot pass at 2x of an already slow stable. Set it to your SLO; models whose
    # stable p99 is above 500 ms need it raised or turned off.
    max_p99_ms: PositiveFloat | None = 500.0
    # Flagger's default 99% success rate, as a delta over stable's own errors.
    max_error_rate_delta: _Fraction | None = 0.01
    # The error-rate gate fails only when an exact binomial test puts the
    # canary's rate above stable's (its upper Wilson bound) plus the delta at this
    # one-sided confidence: 2 errors in 100 against stable's 0.1% is noise, not a
    # regression; 6 in 100 is. Until then an excess only holds the step.
    error_rate_confidence: float = Field(default=0.99, gt=0.5, lt=1)
    # Jensen-Shannon divergence in bits (0..1) between the predicted-class
    # distributions. Sampling noise between two draws of 100 and 1900 requests of
    # the same 10-class mix averages 0.02 (99.99th percentile 0.07); moving 30% of
    # a uniform mix onto one class is 0.22. Validators with many classes should
    # bucket them (top-k plus "other"), since noise grows with the class count.
    max_prediction_js: _Fraction | None = 0.1
    # JS between small samples is biased upwards (about (k - 1) / (2 n ln 2) bits
    # for k classes and n requests: 0.16 at 40 requests of 10 classes), so a JS
    # over the limit fails only once the chi-square test also finds the class mix
    # different at this p-value; until then it holds the step and waits for data.
    prediction_evidence_pvalue: Annotated[float, Field(gt=0, lt=1)] = 0.01
    # Off by default: on large windows a p-value flags differences too small to
    # matter; the JS divergence above measures the size of the shift instead.
    min_prediction_chi2_pvalue: Annotated[float, Field(gt=0, lt=1)] | None = None
    # Share of input features drifted against the version's reference data.
    max_input_drift_share: _Fraction | None = 0.25
    # What "drifted" means per feature, for the validator computing the share:
    # PSI bands read < 0.1 as no change, 0.1-0.25 as moderate, > 0.25 as major.
    feature_psi_threshold: PositiveFloat = 0.25
    # Top-1 agreement with stable on mirrored requests. Digits v1 and v2 (96% and
    # 97% accurate) agree on 96%; v1 and the 48% tree v3 on 48%.
    min_shadow_agreement: _Fraction | None = 0.9


class RolloutSpec(_Spec):
    """How a canary moves from 0 to 100% of traffic.

    With the defaults at 50 requests/s, the 5% step sees its 100 canary requests in
    about 40 s, so a canary failing a gate is rolled back within a minute, and an
    identical canary is promoted in about two and a half minutes.
    """

    steps: tuple[_Percent, ...] = (5.0, 25.0, 50.0, 100.0)
    shadow_percent: _Percent | None = Field(
        default=None,
        description="percent of traffic mirrored to the canary before the first "
        "step; None skips the shadow phase",
    )
    # Agreement's standard error at 500 pairs is about one point, so a canary that
    # truly agrees 94% of the time is almost never measured below 90%.
    shadow_min_pairs: PositiveInt = 500
    min_requests_per_step: PositiveInt = 100
    min_step_s: NonNegativeFloat = 30.0
    max_step_s: PositiveFloat | None = Field(
        default=600.0,
        description="after this long in a step without a decision the rollout is "
        "flagged stalled; it still never promotes without data",
    )
    evaluate_every_s: PositiveFloat = 5.0
    gates: GateSpec = GateSpec()

    @field_validator("steps")
    @classmethod
    def _steps(cls, steps: tuple[float, ...]) -> tuple[float, ...]:
        increasing = all(a < b for a, b in itertools.pairwise(steps))
        if not steps or not increasing or steps[-1] != 100:
            raise ValueError(
                f"steps must be strictly increasing percents in (0, 100] ending at "
                f"100, e.g. [5, 25, 50, 100]; got {list(steps)}"
            )
        return steps

    @model_validator(mode="after")
    def _step_times(self) -> RolloutSpec:
        if self.max_step_s is not None and self.max_step_s < self.min_step_s:
            raise ValueError(
                f"max_step_s ({self.max_step_s:g}) must not be below min_step_s "
                f"({self.min_step_s:g})"
            )
        return self


@dataclass(frozen=True, kw_only=True)
class WindowComparison:
    """Canary against stable over the current step's window of traffic.

    The window starts at ``RolloutState.step_started_at``. Rates are fractions in
    [0, 1]; latencies are milliseconds, ``None`` until the validator's sketch can
    give them. In SHADOW the canary's numbers come from mirrored requests. At the
    100% step stable takes no traffic; the validator then supplies stable's numbers
    from its last window with traffic (or from requests mirrored to it).
    ``prediction_*`` are ``None`` for models without a class output,
    ``input_drift_share`` for versions without reference data, and
    ``shadow_agreement`` when no requests were mirrored.
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
    shadow_agreement: float | None = None

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


class Verdict(str, Enum):
    """A gate's answer. PENDING blocks promotion; SKIPPED does not."""

    PASS = "pass"
    FAIL = "fail"
    PENDING = "pending"
    SKIPPED = "skipped"


@dataclass(frozen=True)
class GateResult:
    """One gate on one window: its measured value against its threshold."""

    name: str
    value: float | None
    threshold: float
    bound: Literal["max", "min"]
    verdict: Verdict
    detail: str = ""

    @property
    def passed(self) -> bool | None:
        """True or False once decided; None while pending or skipped."""
        if self.verdict in (Verdict.PENDING, Verdict.SKIPPED):
            return None
        return self.verdict is Verdict.PASS

    def describe(self) -> str:
        """A one-line account, e.g. ``prediction_js 0.326 > max 0.1``."""
        if self.value is None:
            return f"{self.name} {self.verdict.value}: {self.detail}"
        return describe_measurement(
            self.name, self.value, self.threshold, self.bound, self.detail
        )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (also what webhooks carry)."""
        return {
            "name": self.name,
            "value": self.value,
            "threshold": self.threshold,
            "bound": self.bound,
            "verdict": self.verdict.value,
            "passed": self.passed,
            "detail": self.detail,
        }


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


def _latencies(
    model: tuple[float | None, float | None],
    end_to_end: tuple[float | None, float | None],
) -> tuple[float | None, float | None]:
    """The versions' model times when both have one, else end-to-end latency."""
    return model if None not in model else end_to_end


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
    model, so promotion waits for them). Prediction drift, input drift and shadow
    agreement are SKIPPED when not measured (no class output, no reference data,
    nothing mirrored), except that in the shadow phase (``shadow=True``) agreement
    is the point and stays PENDING until measured.
    """
    c = comparison
    results: list[GateResult] = []
    floor = gates.latency_floor_ms
    latency_gates = (
        (
            "p50",
            gates.max_p50_ratio,
            (c.canary_model_p50_ms, c.stable_model_p50_ms),
            (c.canary_p50_ms, c.stable_p50_ms),
        ),
        (
            "p99",
            gates.max_p99_ratio,
            (c.canary_model_p99_ms, c.stable_model_p99_ms),
            (c.canary_p99_ms, c.stable_p99_ms),
        ),
    )
    for quantile, limit, model, end_to_end in latency_gates:
        if limit is not None:
            canary, stable = _latencies(model, end_to_end)
            missing = f"no {quantile} for both versions yet"
            results.append(
                _latency_ratio(
                    f"{quantile}_ratio", canary, stable, limit, floor, missing
                )
            )
    if gates.max_p99_ms is not None:
        missing = "no canary p99 yet"
        results.append(_at_most("p99_ms", c.canary_p99_ms, gates.max_p99_ms, missing))
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
    if gates.min_shadow_agreement is not None:
        limit, value = gates.min_shadow_agreement, c.shadow_agreement
        if shadow and value is None:
            pending = Verdict.PENDING, "no mirrored pairs yet"
            results.append(GateResult("shadow_agreement", None, limit, "min", *pending))
        else:
            results.append(_optional("shadow_agreement", value, limit, "min"))
    return tuple(results)


# The error-rate gate fails only with statistical evidence, so it may act before
# the step has its minimum of requests; every other gate waits for that minimum.
_EARLY_GATES = frozenset({"error_rate_delta"})


class Phase(str, Enum):
    """Where a rollout is. The canary's step is ``RolloutState.step_index``."""

    PENDING = "pending"
    SHADOW = "shadow"
    CANARY = "canary"
    PROMOTED = "promoted"
    ROLLED_BACK = "rolled_back"
    PAUSED = "paused"


_TERMINAL = frozenset({Phase.PROMOTED, Phase.ROLLED_BACK})
_LIVE = frozenset({Phase.PENDING, Phase.SHADOW, Phase.CANARY})

EventKind = Literal[
    "rollout_started",
    "step_advanced",
    "promoted",
    "rolled_back",
    "paused",
    "resumed",
    "weight_set",
]
EVENT_KINDS: tuple[EventKind, ...] = get_args(EventKind)


class InvalidTransition(ValueError):
    """An operator action that the rollout's phase does not allow."""


@dataclass(frozen=True)
class TimelineEntry:
    """One transition in a rollout's history."""

    ts: float
    phase: Phase
    weight: float
    reason: str


@dataclass(frozen=True)
class Event:
    """Something that happened to a rollout, for webhooks and logs.

    ``version`` is the canary; ``stable`` the version it was measured against.
    """

    kind: EventKind
    model: str
    version: str
    stable: str
    ts: float
    weight: float
    phase: Phase
    reason: str
    gates: tuple[GateResult, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """The JSON body a webhook posts."""
        return {
            "kind": self.kind,
            "model": self.model,
            "version": self.version,
            "stable": self.stable,
            "ts": self.ts,
            "weight": self.weight,
            "phase": self.phase.value,
            "reason": self.reason,
            "gates": [gate.to_dict() for gate in self.gates],
        }


@dataclass(frozen=True, kw_only=True)
class RolloutState:
    """Everything about one rollout that must survive a restart.

    ``steps`` and ``mirror_percent`` are the plan taken from the spec at
    :func:`start`. ``step_index`` points into ``steps`` (None before the first
    step). ``weight`` is the canary's percent of unpinned traffic.
    """

    model: str
    canary_version: str
    stable_version: str
    steps: tuple[float, ...]
    mirror_percent: float | None
    phase: Phase
    step_index: int | None
    weight: float
    step_started_at: float
    paused_from: Phase | None = None
    stalled: bool = False
    history: tuple[TimelineEntry, ...] = ()
    gates: tuple[GateResult, ...] = ()

    @property
    def finished(self) -> bool:
        """Promoted or rolled back: nothing but a new rollout changes it."""
        return self.phase in _TERMINAL

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict, as persisted in the store."""
        return {
            "format": _STATE_FORMAT,
            **_STATE_ADAPTER.dump_python(self, mode="json"),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RolloutState:
        """The inverse of :meth:`to_dict`; raises ValueError on anything else."""
        stored = dict(data)
        if stored.pop("format", None) != _STATE_FORMAT:
            raise ValueError(
                f"rollout state format {data.get('format')!r} is not {_STATE_FORMAT}"
            )
        return _STATE_ADAPTER.validate_python(stored)


# Validates what is read back from the store: phases, verdicts, nested entries.
_STATE_ADAPTER = TypeAdapter(RolloutState)


def _record(
    old: RolloutState, new: RolloutState, kind: EventKind, now: float, reason: str
) -> tuple[RolloutState, tuple[Event, ...]]:
    """Add the move from ``old`` to ``new`` to the history and announce it."""
    entry = TimelineEntry(now, new.phase, new.weight, reason)
    new = replace(new, stalled=False, history=(*new.history, entry))
    # After a promotion stable_version is the canary; the event names the old one.
    event = Event(
        kind=kind,
        model=old.model,
        version=old.canary_version,
        stable=old.stable_version,
        ts=now,
        weight=new.weight,
        phase=new.phase,
        reason=reason,
        gates=new.gates,
    )
    return new, (event,)


def start(
    model: str, canary: str, stable: str, spec: RolloutSpec, now: float
) -> tuple[RolloutState, tuple[Event, ...]]:
    """A new rollout of ``canary`` over ``stable``, PENDING at weight 0.

    The first :func:`step` (once the canary is ready) enters the shadow phase or
    the first step.
    """
    if canary == stable:
        raise InvalidTransition(f"canary and stable are both {canary!r}")
    plan = " -> ".join(f"{pct:g}%" for pct in spec.steps)
    if spec.shadow_percent is not None:
        plan = f"shadow {spec.shadow_percent:g}% -> {plan}"
    state = RolloutState(
        model=model,
        canary_version=canary,
        stable_version=stable,
        steps=spec.steps,
        mirror_percent=spec.shadow_percent,
        phase=Phase.PENDING,
        step_index=None,
        weight=0.0,
        step_started_at=now,
    )
    reason = f"rollout of {canary} over {stable}: {plan}"
    return _record(state, state, "rollout_started", now, reason)


def _enter_first_phase(
    state: RolloutState, now: float
) -> tuple[RolloutState, tuple[Event, ...]]:
    if state.mirror_percent is not None:
        reason = f"canary ready: mirroring {state.mirror_percent:g}% of traffic to it"
        new = replace(state, phase=Phase.SHADOW, step_started_at=now)
    else:
        reason = f"canary ready: {state.steps[0]:g}% of traffic"
        new = replace(
            state,
            phase=Phase.CANARY,
            step_index=0,
            weight=state.steps[0],
            step_started_at=now,
        )
    return _record(state, new, "step_advanced", now, reason)


def _advance(
    state: RolloutState, results: tuple[GateResult, ...], now: float, reason: str
) -> tuple[RolloutState, tuple[Event, ...]]:
    if state.phase is Phase.SHADOW:
        following: int | None = 0
    else:
        higher = [i for i, pct in enumerate(state.steps) if pct > state.weight]
        following = higher[0] if higher else None
    if following is None:
        promoted = replace(
            state,
            phase=Phase.PROMOTED,
            weight=100.0,
            stable_version=state.canary_version,
            gates=results,
        )
        return _record(state, promoted, "promoted", now, reason)
    advanced = replace(
        state,
        phase=Phase.CANARY,
        step_index=following,
        weight=state.steps[following],
        step_started_at=now,
        gates=results,
    )
    return _record(state, advanced, "step_advanced", now, reason)


def step(
    state: RolloutState, spec: RolloutSpec, comparison: WindowComparison, now: float
) -> tuple[RolloutState, tuple[Event, ...]]:
    """Decide on one window: stay, advance, promote or roll back.

    PAUSED, PROMOTED and ROLLED_BACK return ``state`` unchanged. PENDING enters
    the first phase (``comparison`` is ignored: there is no window yet).
    """
    if state.phase is Phase.PENDING:
        return _enter_first_phase(state, now)
    if state.phase not in _LIVE:
        return state, ()
    in_shadow = state.phase is Phase.SHADOW
    results = evaluate_gates(comparison, spec.gates, shadow=in_shadow)
    if in_shadow:
        seen, needed, unit = comparison.shadow_pairs, spec.shadow_min_pairs, "pairs"
    else:
        seen, needed = comparison.canary_requests, spec.min_requests_per_step
        unit = "canary requests"
    enough = seen >= needed
    failed = [
        r.describe()
        for r in results
        if r.verdict is Verdict.FAIL and (enough or r.name in _EARLY_GATES)
    ]
    if failed:
        reason = f"gates failed on {seen} {unit}: " + "; ".join(failed)
        new = replace(state, phase=Phase.ROLLED_BACK, weight=0.0, gates=results)
        return _record(state, new, "rolled_back", now, reason)
    elapsed = now - state.step_started_at
    decided = all(r.verdict in (Verdict.PASS, Verdict.SKIPPED) for r in results)
    if enough and decided and elapsed >= spec.min_step_s:
        reason = f"gates passed on {seen} {unit} over {elapsed:.0f}s"
        return _advance(state, results, now, reason)
    stalled = spec.max_step_s is not None and elapsed >= spec.max_step_s
    return replace(state, gates=results, stalled=stalled), ()


def _refuse(state: RolloutState, action: str) -> InvalidTransition:
    return InvalidTransition(
        f"cannot {action} the rollout of {state.model} {state.canary_version}: "
        f"it is {state.phase.value}"
    )


def promote(
    state: RolloutState, now: float, reason: str
) -> tuple[RolloutState, tuple[Event, ...]]:
    """Operator: promote now, gates or not; also overrides a rollback."""
    if state.phase is Phase.PROMOTED:
        raise _refuse(state, "promote")
    new = replace(
        state,
        phase=Phase.PROMOTED,
        weight=100.0,
        stable_version=state.canary_version,
        paused_from=None,
    )
    return _record(state, new, "promoted", now, f"operator: {reason}")


def rollback(
    state: RolloutState, now: float, reason: str
) -> tuple[RolloutState, tuple[Event, ...]]:
    """Operator: send all traffic back to stable and stop the rollout.

    A promoted version is undone by a new rollout of the previous one instead.
    """
    if state.finished:
        raise _refuse(state, "roll back")
    new = replace(state, phase=Phase.ROLLED_BACK, weight=0.0, paused_from=None)
    return _record(state, new, "rolled_back", now, f"operator: {reason}")


def pause(
    state: RolloutState, now: float, reason: str = "paused"
) -> tuple[RolloutState, tuple[Event, ...]]:
    """Operator: freeze weights and mirroring; :func:`step` ignores it until resumed."""
    if state.phase not in _LIVE:
        raise _refuse(state, "pause")
    new = replace(state, phase=Phase.PAUSED, paused_from=state.phase)
    return _record(state, new, "paused", now, f"operator: {reason}")


def resume(
    state: RolloutState, now: float, reason: str = "resumed"
) -> tuple[RolloutState, tuple[Event, ...]]:
    """Operator: continue where the pause left off, with a fresh step window.

    The window restarts so that the next decision rests on traffic seen after the
    pause, not on numbers from before it.
    """
    if state.phase is not Phase.PAUSED or state.paused_from is None:
        raise _refuse(state, "resume")
    new = replace(state, phase=state.paused_from, paused_from=None, step_started_at=now)
    return _record(state, new, "resumed", now, f"operator: {reason}")


def set_weight(
    state: RolloutState, weight: float, now: float, reason: str = ""
) -> tuple[RolloutState, tuple[Event, ...]]:
    """Operator: put the canary at ``weight`` percent, in the step at or above it.

    The step window restarts. From PENDING or SHADOW this moves to CANARY; a
    paused rollout stays paused (and resumes in CANARY). The next promotion goes
    to the first step above ``weight``.
    """
    if not 0 <= weight <= 100:
        raise ValueError(f"weight must be a percent in [0, 100], got {weight}")
    if state.finished:
        raise _refuse(state, "set the weight of")
    index = next(i for i, pct in enumerate(state.steps) if pct >= weight)
    new = replace(state, step_index=index, weight=float(weight), step_started_at=now)
    if state.phase is Phase.PAUSED:
        new = replace(new, paused_from=Phase.CANARY)
    else:
        new = replace(new, phase=Phase.CANARY)
    reason = f"operator: {reason or f'weight {weight:g}%'}"
    return _record(state, new, "weight_set", now, reason)


def traffic_weights(state: RolloutState) -> dict[str, float]:
    """Percent of unpinned traffic per version, canary first.

    Canary first matches the layout of
    :class:`~rayfleet.platform.serving.traffic.TrafficPlan`, so sticky sessions on
    the canary stay there as its weight grows.
    """
    if state.canary_version == state.stable_version:
        return {state.stable_version: 100.0}
    return {
        state.canary_version: state.weight,
        state.stable_version: 100.0 - state.weight,
    }


def shadow_percent(state: RolloutState) -> float:
    """Percent of traffic to mirror to the canary (0 outside the shadow phase)."""
    phase = state.paused_from if state.phase is Phase.PAUSED else state.phase
    if phase is Phase.SHADOW and state.mirror_percent is not None:
        return state.mirror_percent
    return 0.0
