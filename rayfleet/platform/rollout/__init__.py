"""Progressive rollouts: where a canary is judged and moved, in the order it happens.

1. :mod:`.controller` (:class:`~.controller.ValidatorCore`) takes the routers'
   observations, and every ``evaluate_every_s`` summarises the step's window of
   traffic as a :class:`WindowComparison` (with :mod:`.snapshot` and the
   validation package's counters it also answers the dashboard and ``/metrics``).
2. :mod:`.gates` checks that window against the model's
   :class:`~rayfleet.platform.config.rollout.GateSpec`: one :class:`GateResult`
   per gate, failing only on evidence (the latency gates on the confidence
   bounds of :mod:`.quantile_bounds`).
3. :mod:`.machine` decides what the results mean (stay, advance, promote, roll
   back) and answers the new :class:`RolloutState` and its :class:`Event` list;
   operators' actions are transitions there too.
4. The controller persists the state through a :class:`~.state_store.StateStore`,
   turns it into traffic plans (:func:`traffic_weights`, :func:`shadow_percent`),
   and :mod:`.webhooks` and :mod:`.telemetry` tell the world.

The specs (``rollout``, ``gates``, ``webhooks``) live in
:mod:`rayfleet.platform.config`. This package re-exports the pure core, the gates
and the state machine; import the controller, telemetry and webhooks from their
modules.
"""

from __future__ import annotations

from rayfleet.platform.rollout.gates import (
    GateResult,
    Verdict,
    WindowComparison,
    evaluate_gates,
)
from rayfleet.platform.rollout.machine import (
    Event,
    InvalidTransition,
    Phase,
    RolloutState,
    TimelineEntry,
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

__all__ = [
    "Event",
    "GateResult",
    "InvalidTransition",
    "Phase",
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
