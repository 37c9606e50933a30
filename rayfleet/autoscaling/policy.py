"""Request-count autoscaling as a pure function of wall-clock time.

:func:`decide` turns one observation (the time, the requests in flight plus queued,
the replica count in effect) and the previous :class:`PolicyState` into a replica
count and the next state. It never reads a clock, never counts calls and imports
nothing from Ray, so a test drives it through minutes of traffic in microseconds;
:mod:`rayfleet.autoscaling.serve_policy` feeds it from Serve's controller.

The model is Knative's KPA, in seconds rather than in ticks:

- **Stable mode.** ``desired = ceil(mean demand over stable_window_s / target)``.
  The mean is time-weighted: each sample stands for the interval since the one
  before it, so ten samples a second and one every two seconds give the same
  mean of the same traffic.
- **Panic mode.** When the mean over the short ``panic_window_s`` asks for at
  least ``panic_threshold`` times the current replicas, scale to it at once and
  stay in panic for ``stable_window_s`` after the last time that held. While
  panicking the count never falls: a burst that has just ended is the worst time
  to shed capacity.
- **Hysteresis.** Outside panic, a new count is only recommended once the stable
  mean leaves a band of ``tolerance`` (10 %) either side of what the current
  replicas carry at target (Kubernetes' HPA tolerance), and the count only falls
  to the highest recommendation of the last ``scale_down_delay_s`` (Knative's
  scale-down delay), so load that wobbles around a level never flaps between two
  counts.
- **Rates.** Within any ``scale_rate_period_s`` the count grows at most
  ``max_scale_up_rate``-fold and shrinks at most ``max_scale_down_rate``-fold,
  measured against the counts in effect during that period, not against the
  previous call: a controller that calls ten times a second may not compound them.
- **Zero.** With ``allow_zero``, an idle deployment goes to zero replicas once it
  has seen no demand for ``stable_window_s + scale_to_zero_grace_s``; that grace,
  not the scale-down delay, is the wait for the last replica.

What Serve's users have hit, and what this does about it:

- Delays counted in control-loop iterations stretched with a slow loop
  (ray-project/ray#62004): every duration here is a difference of timestamps.
- Delays shorter than the metrics look-back window thrashed, since each decision
  still saw the load from before the last one (ray-project/ray#26455): scaling up
  acts on the windowed mean directly and scaling down waits on a window of
  recommendations, so the look-back is part of the rule instead of fighting it.
- An autoscaler that oscillated between two sizes left waves of stopped replicas
  that routers still chose, with tails of tens of seconds (ray-project/ray#63279):
  scale-down here is delayed, banded and rate-limited, so each replica removed
  stays removed while the load stays.

Defaults, against Knative's KPA and Serve's own (``AutoscalingConfig`` in 2.60):

====================  =============  ===================  =========================
setting               rayfleet       Knative KPA          Serve (2.60 defaults)
====================  =============  ===================  =========================
stable window         60 s           60 s                 30 s ``look_back_period_s``
panic window          6 s            10 % of stable       none
panic threshold       2x             200 %                none
tolerance band        10 %           none                 none
max scale-up rate     1000x per 2 s  1000x per 2 s tick   ``upscaling_factor`` 1
max scale-down rate   2x per 2 s     2x per 2 s tick      ``downscaling_factor`` 1
scale-up delay        0              0                    30 s ``upscale_delay_s``
scale-down delay      30 s           0                    600 s ``downscale_delay_s``
to zero, once idle    60 + 30 s      60 + 30 s grace      the scale-down delay
====================  =============  ===================  =========================

The 60 s stable window is long enough that the noise of a steady load averages out
(at 10 requests in flight the minute's mean moves by well under one replica) and
short enough that a real change of level is followed within a minute; bursts
shorter than that are what panic mode is for. Knative needs no scale-down delay of
its own because its stable window already smooths; rayfleet adds 30 s because a
replica here loads and warms a model before it serves (seconds to minutes on a
GPU), so giving one back and asking for it again soon costs more than keeping it
half a minute longer. Serve's 600 s default keeps idle replicas for ten minutes; its
30 s upscale delay is what the panic window replaces.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, TypeVar

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    NonNegativeFloat,
    PositiveFloat,
    PositiveInt,
    model_validator,
)

__all__ = ["PolicyState", "RequestCountPolicy", "decide"]

# Window means are sums of products of floats: keep 16.000000000000004 requests
# from asking for a seventeenth replica.
_EPSILON = 1e-9

Sample = tuple[float, float]
Step = tuple[float, int]
_Entry = TypeVar("_Entry", bound=tuple[float, float])


class RequestCountPolicy(BaseModel):
    """How one deployment scales on the requests in flight and queued for it.

    Every duration is wall-clock seconds. ``min_replicas`` is the floor while any
    traffic flows; ``allow_zero`` lets an idle deployment go below it, to zero.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    target_ongoing_requests: PositiveFloat = 2.0
    min_replicas: PositiveInt = 1
    max_replicas: PositiveInt = 1
    allow_zero: bool = False
    stable_window_s: PositiveFloat = 60.0
    panic_window_s: PositiveFloat = 6.0
    panic_threshold: float = Field(default=2.0, gt=1.0)
    max_scale_up_rate: float = Field(default=1000.0, gt=1.0)
    max_scale_down_rate: float = Field(default=2.0, gt=1.0)
    scale_rate_period_s: PositiveFloat = 2.0
    scale_down_delay_s: NonNegativeFloat = 30.0
    tolerance: float = Field(default=0.1, ge=0.0, lt=1.0)
    scale_to_zero_grace_s: NonNegativeFloat = 30.0

    @model_validator(mode="after")
    def _consistent(self) -> RequestCountPolicy:
        if self.min_replicas > self.max_replicas:
            raise ValueError(
                f"min_replicas ({self.min_replicas}) must not exceed max_replicas "
                f"({self.max_replicas}), e.g. {{min_replicas: 1, max_replicas: 8}}"
            )
        if self.panic_window_s > self.stable_window_s:
            raise ValueError(
                f"panic_window_s ({self.panic_window_s}) must not exceed "
                f"stable_window_s ({self.stable_window_s}), e.g. 6 and 60"
            )
        return self


@dataclass(frozen=True)
class PolicyState:
    """What :func:`decide` remembers between calls; ``PolicyState()`` is fresh.

    Histories are ``(time, value)`` pairs, oldest first, pruned to the window that
    reads them plus the one entry in effect at the window's start:

    - ``demand``: every observation of requests in flight plus queued; each stands
      for the interval since the previous one.
    - ``recommendations``: the count the load asked for, before the scale-down
      delay and the rates; an entry per change.
    - ``decisions``: the count in effect; an entry per change.
    """

    demand: tuple[Sample, ...] = ()
    recommendations: tuple[Step, ...] = ()
    decisions: tuple[Step, ...] = ()
    panic_until: float | None = None
    busy_until: float | None = None
    last_decision: int | None = None
    last_change_at: float | None = None

    def panicking(self, now: float) -> bool:
        """Whether panic mode holds at ``now``."""
        return self.panic_until is not None and now < self.panic_until

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable copy, for a policy-state store such as Serve's."""
        return {
            "demand": [list(sample) for sample in self.demand],
            "recommendations": [list(step) for step in self.recommendations],
            "decisions": [list(step) for step in self.decisions],
            "panic_until": self.panic_until,
            "busy_until": self.busy_until,
            "last_decision": self.last_decision,
            "last_change_at": self.last_change_at,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PolicyState:
        """The state :meth:`to_dict` wrote; an empty mapping is the fresh state."""

        def optional_float(key: str) -> float | None:
            value = data.get(key)
            return None if value is None else float(value)

        last_decision = data.get("last_decision")
        return cls(
            demand=tuple((float(t), float(v)) for t, v in data.get("demand", ())),
            recommendations=tuple(
                (float(t), int(v)) for t, v in data.get("recommendations", ())
            ),
            decisions=tuple((float(t), int(v)) for t, v in data.get("decisions", ())),
            panic_until=optional_float("panic_until"),
            busy_until=optional_float("busy_until"),
            last_decision=None if last_decision is None else int(last_decision),
            last_change_at=optional_float("last_change_at"),
        )


def _ceil(value: float) -> int:
    return max(0, math.ceil(value - _EPSILON))


def _since(history: tuple[_Entry, ...], start: float) -> tuple[_Entry, ...]:
    """``history`` from the last entry at or before ``start`` onwards."""
    first = 0
    for index, entry in enumerate(history):
        if entry[0] <= start:
            first = index
        else:
            break
    return history[first:]


def _append(history: tuple[_Entry, ...], entry: _Entry) -> tuple[_Entry, ...]:
    """``history`` with ``entry`` appended; a second entry at the same time wins."""
    if history and history[-1][0] == entry[0]:
        return (*history[:-1], entry)
    return (*history, entry)


def _record_step(history: tuple[Step, ...], now: float, value: int) -> tuple[Step, ...]:
    if history and history[-1][1] == value:
        return history
    return _append(history, (now, value))


def _window_mean(samples: tuple[Sample, ...], now: float, window_s: float) -> float:
    """Time-weighted mean of ``samples`` over ``[now - window_s, now]``.

    Sample ``i`` stands for ``(t[i-1], t[i]]``; the oldest stands for its instant
    only, so a history shorter than the window is the mean of what was seen.
    """
    start = now - window_s
    total = 0.0
    covered = 0.0
    previous: float | None = None
    for at, value in samples:
        if previous is not None:
            span = min(at, now) - max(previous, start)
            if span > 0:
                total += value * span
                covered += span
        previous = at
    return total / covered if covered > 0 else samples[-1][1]


def _in_effect(steps: tuple[Step, ...], start: float, now: float) -> list[int]:
    """Values of the step function ``steps`` anywhere in ``[start, now)``."""
    values = []
    for index, (at, value) in enumerate(steps):
        ends = steps[index + 1][0] if index + 1 < len(steps) else math.inf
        if at < now and ends > start:
            values.append(value)
    return values


def decide(
    now: float,
    demand: float,
    current_replicas: int,
    state: PolicyState,
    config: RequestCountPolicy,
) -> tuple[int, PolicyState]:
    """The replica count for ``now`` and the state to pass to the next call.

    ``demand`` is the requests in flight plus queued for the whole deployment,
    ``current_replicas`` the count in effect (the last target, whether or not all
    its replicas run yet). Call it as often as you like, regularly or not: answers
    depend on timestamps, never on how many calls came before. A clock that steps
    backwards starts a fresh state.
    """
    if not math.isfinite(demand) or demand < 0:
        raise ValueError(f"demand must be a finite number >= 0, not {demand!r}")
    if current_replicas < 0:
        raise ValueError(f"current_replicas must be >= 0, not {current_replicas}")
    if state.demand and now < state.demand[-1][0]:
        state = PolicyState()

    target = config.target_ongoing_requests
    current = current_replicas

    samples = _since(
        _append(state.demand, (now, float(demand))), now - config.stable_window_s
    )
    stable = _window_mean(samples, now, config.stable_window_s)
    panic = _window_mean(samples, now, config.panic_window_s)
    busy_until = now if demand > 0 or state.busy_until is None else state.busy_until

    panic_desired = _ceil(panic / target)
    panic_until = state.panic_until
    if panic_desired >= config.panic_threshold * max(current, 1):
        panic_until = now + config.stable_window_s
    panicking = panic_until is not None and now < panic_until

    idle_s = now - busy_until
    zero_ok = (
        config.allow_zero
        and idle_s >= config.stable_window_s + config.scale_to_zero_grace_s
    )
    floor = 0 if zero_ok else config.min_replicas

    desired = _ceil(stable / target)
    load = stable / (target * current) if current else math.inf
    if panicking:
        want = max(panic_desired, current)
    elif abs(load - 1) > config.tolerance + _EPSILON:
        want = desired
    else:
        want = current
    want = min(max(want, floor), config.max_replicas)

    delay_start = now - config.scale_down_delay_s
    recommendations = _since(
        _record_step(state.recommendations, now, want), delay_start
    )
    if want >= current or (zero_ok and want == 0):
        chosen = want
    elif recommendations[0][0] <= delay_start:
        chosen = min(current, max(step[1] for step in recommendations))
    else:
        # Seen for less than the delay: what came before is unknown, so keep it.
        chosen = current

    rate_start = now - config.scale_rate_period_s
    decisions = _record_step(state.decisions, now, current)
    in_effect = _in_effect(decisions, rate_start, now) or [current]
    ceiling = max(current, math.ceil(config.max_scale_up_rate * max(min(in_effect), 1)))
    bottom = min(current, math.floor(max(in_effect) / config.max_scale_down_rate))
    replicas = min(max(chosen, bottom), ceiling)
    replicas = min(max(replicas, floor), config.max_replicas)

    changed = replicas != current
    return replicas, replace(
        state,
        demand=samples,
        recommendations=recommendations,
        decisions=_since(_record_step(decisions, now, replicas), rate_start),
        panic_until=panic_until,
        busy_until=busy_until,
        last_decision=replicas,
        last_change_at=now if changed else state.last_change_at,
    )
