from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from ray.serve._private.common import DeploymentID
from ray.serve.autoscaling_policy import _apply_autoscaling_config
from ray.serve.config import AutoscalingConfig, AutoscalingContext

from rayfleet.autoscaling.policy import PolicyState, RequestCountPolicy
from rayfleet.autoscaling.serve_policy import (
    DIRECT_ONGOING_METRIC,
    LOOK_BACK_PERIOD_S,
    METRICS_INTERVAL_S,
    POLICY_FUNCTION,
    STATE_KEY,
    RequestCountAutoscaler,
    autoscaling_config_for,
    policy_for,
)
from rayfleet.platform.config.spec import DEFAULT_STABLE_WINDOW_S, AutoscalingSpec

Policy = Callable[[AutoscalingContext], tuple[int, dict[str, Any]]]


def scaling(**fields: Any) -> AutoscalingSpec:
    return AutoscalingSpec.model_validate(fields)


def config_for(**fields: Any) -> AutoscalingConfig:
    """Serve's validated config for a spec, 4 requests per replica."""
    return AutoscalingConfig(**autoscaling_config_for(scaling(**fields), 4.0))


def context(
    config: AutoscalingConfig,
    *,
    now: float,
    demand: float,
    target: int,
    running: int | None = None,
    state: dict[str, Any] | None = None,
    custom: dict[str, dict[Any, float]] | None = None,
) -> AutoscalingContext:
    """A context shaped as the controller builds it (``get_autoscaling_context``)."""
    return AutoscalingContext(
        deployment_id=DeploymentID(name="digits:v1", app_name="rayfleet"),
        deployment_name="digits:v1",
        app_name="rayfleet",
        current_num_replicas=target if running is None else running,
        target_num_replicas=target,
        running_replicas=[],
        total_num_requests=lambda: demand,
        total_queued_requests=lambda: 0.0,
        aggregated_metrics=custom,
        raw_metrics=None,
        capacity_adjusted_min_replicas=config.min_replicas,
        capacity_adjusted_max_replicas=config.max_replicas,
        policy_state=dict(state or {}),
        last_scale_up_time=None,
        last_scale_down_time=None,
        current_time=now,
        config=config,
    )


def serve_policy(config: AutoscalingConfig) -> Policy:
    """What the controller runs: the deserialized class, instantiated with the
    kwargs, inside Serve's wrapper of factors and delays."""
    policy_class = config.policy.get_policy()
    assert isinstance(policy_class, type)
    wrapped: Policy = _apply_autoscaling_config(
        policy_class(**config.policy.policy_kwargs)
    )
    return wrapped


def test_serve_policy_is_serves_default_config() -> None:
    assert autoscaling_config_for(scaling(max_replicas=4), 4.0, "serve") == {
        "min_replicas": 1,
        "initial_replicas": None,
        "max_replicas": 4,
        "target_ongoing_requests": 4.0,
    }


def test_rayfleet_config_is_valid_for_serve_and_carries_the_policy() -> None:
    spec = scaling(min_replicas=0, initial_replicas=1, max_replicas=8)
    raw = autoscaling_config_for(spec, 4.0)
    json.dumps(raw)
    config = AutoscalingConfig(**raw)
    assert config.policy.policy_function == POLICY_FUNCTION
    assert config.policy.get_serialized_policy_def()
    assert (config.upscale_delay_s, config.downscale_delay_s) == (0.0, 0.0)
    assert config.metrics_interval_s == METRICS_INTERVAL_S
    assert config.look_back_period_s == LOOK_BACK_PERIOD_S
    assert (config.min_replicas, config.initial_replicas) == (0, 1)
    assert RequestCountPolicy(**config.policy.policy_kwargs) == policy_for(spec, 4.0)


def test_policy_for_maps_min_zero_to_allow_zero() -> None:
    assert policy_for(scaling(min_replicas=0, max_replicas=3), 4.0) == (
        RequestCountPolicy(
            target_ongoing_requests=4.0, min_replicas=1, max_replicas=3, allow_zero=True
        )
    )
    assert not policy_for(scaling(min_replicas=2, max_replicas=3), 4.0).allow_zero


def test_adapter_contract_with_a_real_context() -> None:
    config = config_for(max_replicas=8)
    policy = RequestCountAutoscaler(**config.policy.policy_kwargs)
    serve_state = {"__decision_counters": 0, "__decision_timestamp": None}
    replicas, state = policy(
        context(config, now=100.0, demand=12.0, target=1, state=serve_state)
    )
    # 12 in flight at 4 per replica is 3x one replica: panic, straight to 3.
    assert replicas == 3
    assert set(state) == {STATE_KEY}
    json.dumps(state)
    restored = PolicyState.from_dict(state[STATE_KEY])
    assert restored.panicking(100.0)
    assert restored.demand == ((100.0, 12.0),)


def test_requests_on_direct_channels_count_with_serves_own() -> None:
    config = config_for(max_replicas=8)
    policy = RequestCountAutoscaler(**config.policy.policy_kwargs)
    # Serve sees 2 (the handle's); the replicas report 6 and 4 on their channels.
    direct = {DIRECT_ONGOING_METRIC: {"r1": 6.0, "r2": 4.0}, "other": {"r1": 99.0}}
    replicas, state = policy(
        context(config, now=100.0, demand=2.0, target=1, custom=direct)
    )
    assert PolicyState.from_dict(state[STATE_KEY]).demand == ((100.0, 12.0),)
    assert replicas == 3


def test_a_bad_direct_report_counts_as_nothing() -> None:
    config = config_for(max_replicas=8)
    policy = RequestCountAutoscaler(**config.policy.policy_kwargs)
    direct = {DIRECT_ONGOING_METRIC: {"r1": float("nan"), "r2": -3.0}}
    _, state = policy(context(config, now=100.0, demand=4.0, target=1, custom=direct))
    assert PolicyState.from_dict(state[STATE_KEY]).demand == ((100.0, 4.0),)


def test_the_count_in_effect_is_the_target_not_the_running_replicas() -> None:
    config = config_for(max_replicas=8)
    policy = RequestCountAutoscaler(**config.policy.policy_kwargs)
    _, state = policy(context(config, now=0.0, demand=12.0, target=1))
    # A second later only one of the three ordered replicas runs yet.
    replicas, _ = policy(
        context(config, now=1.0, demand=12.0, target=3, running=1, state=state)
    )
    assert replicas == 3


def test_through_serves_wrapper_the_policy_keeps_its_own_timing() -> None:
    config = config_for(max_replicas=8)
    policy = serve_policy(config)
    state: dict[str, Any] = {}
    target = 1
    decided = []
    for second in range(100):
        demand = 12.0 if second < 10 else 0.0
        ctx = context(
            config, now=1000.0 + second, demand=demand, target=target, state=state
        )
        target, state = policy(ctx)
        decided.append(target)
    # Up at once (no upscale_delay_s), held through panic, then down after the
    # policy's own windows; Serve's delay counters ride along in the same dict.
    assert decided[0] == 3
    assert all(count == 3 for count in decided[:60])
    assert decided[-1] == 1
    assert "__decision_counters" in state
    assert STATE_KEY in state


def test_zero_replicas_with_waiting_requests_is_serves_cold_start() -> None:
    config = config_for(min_replicas=0, max_replicas=4)
    replicas, state = serve_policy(config)(
        context(config, now=0.0, demand=5.0, target=0)
    )
    assert replicas == 1
    assert STATE_KEY not in state


def test_spec_windows_reach_the_policy() -> None:
    policy = policy_for(
        scaling(max_replicas=4, stable_window_s=10, scale_down_delay_s=2), 2.0
    )
    assert (policy.stable_window_s, policy.scale_down_delay_s) == (10.0, 2.0)
    # A stable window under the default panic window takes the panic window down.
    short = policy_for(scaling(max_replicas=4, stable_window_s=4), 2.0)
    assert (short.stable_window_s, short.panic_window_s) == (4.0, 4.0)
    assert policy_for(scaling(max_replicas=4), 2.0) == RequestCountPolicy(
        target_ongoing_requests=2.0, max_replicas=4
    )


def test_the_spec_knows_the_policys_default_stable_window() -> None:
    default = RequestCountPolicy.model_fields["stable_window_s"].default
    assert default == DEFAULT_STABLE_WINDOW_S
