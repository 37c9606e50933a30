"""The request-count policy as Serve 2.60 runs it, and the config that selects it.

How Serve calls a custom policy (``ray/serve/_private/autoscaling_state.py``):

- ``autoscaling_config.policy.policy_function`` is an import path,
  ``"module:attribute"``. Serve imports it where the config is built and
  cloudpickles it *by value* for the controller, so this module's imports (the
  pure policy, pydantic) must be importable on the head node: install rayfleet
  there, as the cluster files do.
- When the attribute is a class, the controller instantiates it once per
  deployment registration (every deploy or config change) with
  ``policy.policy_kwargs`` (JSON values only) and then calls the instance with an
  ``AutoscalingContext`` on every control-loop iteration, about every 0.1 s plus
  the loop's own work. A plain function would get no kwargs; it could read
  ``ctx.config.policy.policy_kwargs``, but would validate them on every call.
- The call returns ``(replicas, policy_state)``. The controller hands
  ``policy_state`` back on the next call as ``ctx.policy_state`` and starts it
  empty at each registration; it is memory only, gone if the controller restarts.
- Serve wraps the policy (``_apply_autoscaling_config``): when no replica runs and
  requests wait, it scales 0 -> 1 without calling it; otherwise it applies
  ``upscaling_factor``/``downscaling_factor``, then ``upscale_delay_s`` and
  ``downscale_delay_s`` against ``ctx.target_num_replicas``, and lowers to zero
  only from one replica. The controller then clamps the answer to the
  capacity-adjusted min and max. The config below sets the factors and delays to
  identities, so this policy's own wall-clock windows are the only delays.
- ``ctx.total_num_requests`` is the deployment's requests running on replicas plus
  queued at handles, a mean over ``look_back_period_s`` of samples that handles
  and replicas push every ``metrics_interval_s`` (10 s by default, and in 2.60
  still the only knob for it: the environment variables named in its deprecation
  notice are not read). A panic window of 6 s needs fresher data, so the config
  pushes every second and averages over 3 s.

Scaling down without failing a request: Serve takes a replica out of the routing
tables, waits ``graceful_shutdown_wait_loop_s`` for routers to notice, then waits
for its in-flight requests, for at most ``graceful_shutdown_timeout_s`` before it
kills it. Keep the wait loop at its default of 2 s (routers learn of the change by
long poll within a fraction of that) and set the timeout above the router's
``request_timeout_s`` plus two wait loops (35 s for the defaults), so a request a
router sent just before the removal always finishes on the replica it reached.
"""

from __future__ import annotations

import math
import time
from typing import Any, Literal

from ray.serve.config import AutoscalingContext

from rayfleet.autoscaling.policy import PolicyState, RequestCountPolicy, decide
from rayfleet.platform.config.spec import AutoscalingSpec

__all__ = [
    "DIRECT_ONGOING_METRIC",
    "LOOK_BACK_PERIOD_S",
    "METRICS_INTERVAL_S",
    "POLICY_FUNCTION",
    "STATE_KEY",
    "PolicyName",
    "RequestCountAutoscaler",
    "autoscaling_config_for",
    "policy_for",
]

PolicyName = Literal["rayfleet", "serve"]

POLICY_FUNCTION = "rayfleet.autoscaling.serve_policy:RequestCountAutoscaler"
# Serve keeps its own delay counters in the same dict under "__"-prefixed keys.
STATE_KEY = "rayfleet"
METRICS_INTERVAL_S = 1.0
# Half the default panic window, and above METRICS_INTERVAL_S as Serve requires.
LOOK_BACK_PERIOD_S = 3.0
# The custom metric a replica reports (Serve's ``record_autoscaling_stats``) for
# the calls running over its direct channel, which Serve does not count.
DIRECT_ONGOING_METRIC = "rayfleet_direct_ongoing"


class RequestCountAutoscaler:
    """Serve's custom autoscaling policy: ``policy_kwargs`` are a
    :class:`RequestCountPolicy`; each call is one :func:`decide`."""

    def __init__(self, **policy: Any) -> None:
        self.policy = RequestCountPolicy.model_validate(policy)

    def __call__(self, ctx: AutoscalingContext) -> tuple[int, dict[str, Any]]:
        """One decision for the deployment ``ctx`` describes.

        The count in effect is ``ctx.target_num_replicas``, not the running
        replicas: those lag the target while replicas start or drain, and judging
        by them would order again capacity already ordered.
        """
        now = ctx.current_time if ctx.current_time is not None else time.time()
        demand = _finite(ctx.total_num_requests) + _direct_ongoing(ctx)
        state = PolicyState.from_dict(ctx.policy_state.get(STATE_KEY, {}))
        replicas, state = decide(
            now, demand, ctx.target_num_replicas, state, self.policy
        )
        return replicas, {STATE_KEY: state.to_dict()}


def _finite(count: float) -> float:
    count = float(count)
    return count if math.isfinite(count) and count > 0 else 0.0


def _direct_ongoing(ctx: AutoscalingContext) -> float:
    """The calls replicas report running over their direct channels: the same
    window mean Serve takes of its own count, summed over replicas."""
    per_replica = (ctx.aggregated_metrics or {}).get(DIRECT_ONGOING_METRIC, {})
    return sum(_finite(count) for count in per_replica.values())


def policy_for(scaling: AutoscalingSpec, target: float) -> RequestCountPolicy:
    """The request-count policy for a deployment's spec: its bounds, ``target``
    in-flight requests per replica, the windows the spec sets, and the documented
    defaults for everything else.

    ``min_replicas: 0`` in the spec means one replica while traffic flows and zero
    once the deployment has been idle past the stable window and the grace.
    """
    windows = scaling.windows()
    if "stable_window_s" in windows and "panic_window_s" not in windows:
        # A short stable window shortens the default panic window with it.
        default_panic = RequestCountPolicy.model_fields["panic_window_s"].default
        windows["panic_window_s"] = min(default_panic, windows["stable_window_s"])
    return RequestCountPolicy(
        target_ongoing_requests=target,
        min_replicas=max(scaling.min_replicas, 1),
        max_replicas=scaling.max_replicas,
        allow_zero=scaling.min_replicas == 0,
        **windows,
    )


def autoscaling_config_for(
    scaling: AutoscalingSpec, target: float, policy_name: PolicyName = "rayfleet"
) -> dict[str, Any]:
    """The ``autoscaling_config`` of a deployment (a version's, or the router's).

    ``"serve"`` is Serve's default policy with its default delays; ``"rayfleet"``
    is :class:`RequestCountAutoscaler` with the same bounds and target, and Serve's
    own delays and factors set to identities.
    """
    config: dict[str, Any] = {
        "min_replicas": scaling.min_replicas,
        "initial_replicas": scaling.initial_replicas,
        "max_replicas": scaling.max_replicas,
        "target_ongoing_requests": target,
    }
    if policy_name == "serve":
        return config
    return {
        **config,
        "metrics_interval_s": METRICS_INTERVAL_S,
        "look_back_period_s": LOOK_BACK_PERIOD_S,
        "upscale_delay_s": 0.0,
        "downscale_delay_s": 0.0,
        "policy": {
            "policy_function": POLICY_FUNCTION,
            "policy_kwargs": policy_for(scaling, target).model_dump(mode="json"),
        },
    }
