"""The progressive rollout of one canary version against its stable version.

A rollout is a small state machine, driven by pure functions::

    start ─> PENDING ─step─> SHADOW ─gates pass─> CANARY step 0 ─> ... ─> PROMOTED
                      └──────(no shadow)──────────┘      │
                  any live phase ── a gate fails ─> ROLLED_BACK
                  any live phase ── pause ─> PAUSED ── resume ─> where it was

The controller (:mod:`.controller`) owns everything impure: it reads the clock,
computes a :class:`~.gates.WindowComparison` over the requests seen since
``state.step_started_at``, calls :func:`step` every ``evaluate_every_s``, applies
:func:`traffic_weights` and :func:`shadow_percent` to the router, persists
:meth:`RolloutState.to_dict` and sends each :class:`Event` to the webhooks.

Decisions this module makes, and why:

- A rollout starts in PENDING at weight 0; the controller calls :func:`step` once
  the canary's replicas are ready, so model loading never counts as step time.
- Promotion (to the next step, or PROMOTED after the last) needs
  ``min_requests_per_step`` canary requests (``shadow_min_pairs`` shadow pairs in
  SHADOW), ``min_step_s`` in the step, and every enabled gate passed or skipped.
  A pending gate (not enough data) blocks it: no data, no promotion.
- Rollback needs only the request count, not ``min_step_s``: the time floor guards
  against promoting on a lucky short window, while a gate that already fails on
  enough requests only costs users more bad answers if we wait. The error-rate
  gate may roll back even before the request count, because it fails only on a
  one-sided confidence bound that already accounts for the sample size.
- Rollback also needs a failing gate on ``failure_threshold`` evaluations in a
  row (Flagger's failure threshold), counted in
  ``RolloutState.consecutive_failures``; in between the step holds, and the
  failing results say how far the count is ("failing 1 of 2"). Any failing gate
  counts, the early error-rate gate included: its bound already rules out noise,
  but a window can still be unlike the ones around it (a burst, a stalled
  neighbour), and waiting two more evaluations costs seconds. An evaluation
  without a failing gate, and any new step window, resets the count.
- The weight only goes up on its own; only a rollback (to 0) or an operator's
  :func:`set_weight` lowers it. PAUSED and the terminal phases ignore :func:`step`.
- The plan (steps and shadow percent) is fixed when the rollout starts and kept in
  the state, so a redeploy with new steps changes the next rollout, not the running
  one; gate thresholds and timing come from the spec passed to each :func:`step`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, replace
from enum import Enum
from typing import Any

from pydantic import TypeAdapter

from rayfleet.platform.config.rollout import EventKind, RolloutSpec
from rayfleet.platform.rollout.gates import (
    GateResult,
    Verdict,
    WindowComparison,
    evaluate_gates,
)

__all__ = [
    "Event",
    "InvalidTransition",
    "Phase",
    "RolloutState",
    "TimelineEntry",
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

# Format 2 renamed ``mirror_percent`` to ``shadow_percent`` (0.2.0); format 1 is
# still read, so a rollout running across the upgrade resumes, until 0.3.0.
_STATE_FORMAT = 2
_READABLE_FORMATS = frozenset({1, _STATE_FORMAT})


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

    ``steps`` and ``shadow_percent`` are the plan taken from the spec at
    :func:`start`. ``step_index`` points into ``steps`` (None before the first
    step). ``weight`` is the canary's percent of unpinned traffic.
    ``consecutive_failures`` counts the evaluations in a row, in this step's
    window, on which a gate failed (0 in states saved before it existed).
    """

    model: str
    canary_version: str
    stable_version: str
    steps: tuple[float, ...]
    shadow_percent: float | None
    phase: Phase
    step_index: int | None
    weight: float
    step_started_at: float
    paused_from: Phase | None = None
    stalled: bool = False
    history: tuple[TimelineEntry, ...] = ()
    gates: tuple[GateResult, ...] = ()
    consecutive_failures: int = 0

    @property
    def finished(self) -> bool:
        """Promoted or rolled back: nothing but a new rollout changes it."""
        return self.phase in _TERMINAL

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict, as persisted in the store."""
        # Through JSON text, not dump_python: that keeps a gate value of inf (a
        # ratio over a zero stable latency) as a float that no JSON encoder takes,
        # and /-/rollouts answered 500; pydantic's JSON writes it as null.
        return {
            "format": _STATE_FORMAT,
            **json.loads(_STATE_ADAPTER.dump_json(self)),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RolloutState:
        """The inverse of :meth:`to_dict`; raises ValueError on anything else."""
        stored = dict(data)
        if stored.pop("format", None) not in _READABLE_FORMATS:
            raise ValueError(
                f"rollout state format {data.get('format')!r} is not one of "
                f"{sorted(_READABLE_FORMATS)}"
            )
        if "mirror_percent" in stored:
            stored["shadow_percent"] = stored.pop("mirror_percent")
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
        shadow_percent=spec.shadow_percent,
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
    if state.shadow_percent is not None:
        reason = f"canary ready: shadowing {state.shadow_percent:g}% of traffic to it"
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
    failing = {
        r.name
        for r in results
        if r.verdict is Verdict.FAIL and (enough or r.name in _EARLY_GATES)
    }
    elapsed = now - state.step_started_at
    stalled = spec.max_step_s is not None and elapsed >= spec.max_step_s
    if failing:
        count, threshold = state.consecutive_failures + 1, spec.failure_threshold
        if count < threshold:
            noted = _count_failures(results, failing, f"failing {count} of {threshold}")
            held = replace(
                state, gates=noted, stalled=stalled, consecutive_failures=count
            )
            return held, ()
        described = "; ".join(r.describe() for r in results if r.name in failing)
        in_a_row = f", {count} evaluations in a row" if count > 1 else ""
        reason = f"gates failed on {seen} {unit}{in_a_row}: {described}"
        new = replace(
            state,
            phase=Phase.ROLLED_BACK,
            weight=0.0,
            gates=results,
            consecutive_failures=count,
        )
        return _record(state, new, "rolled_back", now, reason)
    state = replace(state, consecutive_failures=0)
    decided = all(r.verdict in (Verdict.PASS, Verdict.SKIPPED) for r in results)
    if enough and decided and elapsed >= spec.min_step_s:
        reason = f"gates passed on {seen} {unit} over {elapsed:.0f}s"
        return _advance(state, results, now, reason)
    return replace(state, gates=results, stalled=stalled), ()


def _count_failures(
    results: tuple[GateResult, ...], failing: set[str], note: str
) -> tuple[GateResult, ...]:
    """``results`` with ``note`` added to the detail of each gate in ``failing``."""
    return tuple(
        replace(r, detail="; ".join(filter(None, (r.detail, note))))
        if r.name in failing
        else r
        for r in results
    )


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
    """Operator: freeze weights and shadowing; :func:`step` ignores it until resumed."""
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
    new = replace(
        state,
        phase=state.paused_from,
        paused_from=None,
        step_started_at=now,
        consecutive_failures=0,
    )
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
    new = replace(
        state,
        step_index=index,
        weight=float(weight),
        step_started_at=now,
        consecutive_failures=0,
    )
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
    """Percent of traffic to shadow to the canary now (0 outside the shadow phase)."""
    phase = state.paused_from if state.phase is Phase.PAUSED else state.phase
    if phase is Phase.SHADOW and state.shadow_percent is not None:
        return state.shadow_percent
    return 0.0
