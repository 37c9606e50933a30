from __future__ import annotations

import logging
from typing import Any

import pytest
from pydantic import ValidationError

from rayfleet.platform.config.rollout import GateSpec
from rayfleet.platform.config.spec import (
    BatchingSpec,
    ObservationSpec,
    RouterSpec,
    VersionSpec,
    parse_spec,
)
from rayfleet.platform.errors import ConfigError


def spec(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "store": "/models",
        "models": [{"name": "digits", "versions": [{"name": "v1"}]}],
    }
    base.update(overrides)
    return base


def versions(*entries: dict[str, Any]) -> dict[str, Any]:
    return spec(models=[{"name": "digits", "versions": list(entries)}])


def test_defaults() -> None:
    parsed = parse_spec(spec())
    version = parsed.model("digits").version("v1")
    assert version.batching.max_batch_size == 16
    assert version.target_ongoing_requests == 16
    assert version.replica_max_ongoing_requests == 128
    unbatched = VersionSpec(name="v1", batching=BatchingSpec(max_batch_size=1))
    assert unbatched.replica_max_ongoing_requests == 64
    declared = VersionSpec(name="v1", max_ongoing_requests=3)
    assert declared.replica_max_ongoing_requests == 3
    assert parsed.router.max_body_bytes == 64 * 1024 * 1024
    assert parsed.model("digits").initial_weights() == {"v1": 100.0}


@pytest.mark.parametrize(
    ("args", "path", "message"),
    [
        (spec(stor="/x"), "args.stor", "Extra inputs are not permitted"),
        (spec(models=[]), "args.models", "at least 1"),
        (
            versions({"name": "v1", "batching": {"max_batch_size": 0}}),
            "args.models.0.versions.0.batching.max_batch_size",
            "greater than 0",
        ),
        (
            versions(
                {"name": "v1", "autoscaling": {"min_replicas": 3, "max_replicas": 2}}
            ),
            "args.models.0.versions.0.autoscaling",
            "min_replicas (3) must not exceed max_replicas (2)",
        ),
        (
            versions(
                {
                    "name": "v1",
                    "autoscaling": {"stable_window_s": 5, "panic_window_s": 10},
                }
            ),
            "args.models.0.versions.0.autoscaling",
            "panic_window_s (10) must not exceed stable_window_s (5)",
        ),
        (
            versions({"name": "v1", "autoscaling": {"panic_window_s": 90}}),
            "args.models.0.versions.0.autoscaling",
            "panic_window_s (90) must not exceed stable_window_s (60)",
        ),
        (
            versions(
                {"name": "v1", "autoscaling": {"policy": "serve", "stable_window_s": 5}}
            ),
            "args.models.0.versions.0.autoscaling",
            "stable_window_s tune the rayfleet policy only",
        ),
        (
            versions({"name": "v1"}, {"name": "v1"}),
            "args.models.0",
            "repeated: ['v1']",
        ),
        (
            versions({"name": "bad name"}),
            "args.models.0.versions.0.name",
            "not a valid",
        ),
        (
            versions({"name": "v1", "weight": 70}, {"name": "v2", "weight": 40}),
            "args.models.0",
            "add up to 110",
        ),
        (
            versions({"name": "v1", "runtime": "triton"}),
            "args.models.0.versions.0",
            "go together",
        ),
        (
            versions({"name": "v1", "num_gpus": -1}),
            "args.models.0.versions.0.num_gpus",
            "",
        ),
        (
            spec(router={"request_timeout_s": 0}),
            "args.router.request_timeout_s",
            "greater than 0",
        ),
    ],
)
def test_errors_name_the_field_path(
    args: dict[str, Any], path: str, message: str
) -> None:
    with pytest.raises(ConfigError) as raised:
        parse_spec(args)
    text = str(raised.value)
    assert f"{path}:" in text
    assert message in text


def test_require_gpu_is_off_unless_set_and_kept_on_a_gpu_onnx_version() -> None:
    assert VersionSpec(name="v1").require_gpu is False
    version = (
        parse_spec(versions({"name": "v1", "num_gpus": 0.25, "require_gpu": True}))
        .model("digits")
        .version("v1")
    )
    assert (version.num_gpus, version.require_gpu) == (0.25, True)
    explicit = VersionSpec(name="v1", runtime="onnx", num_gpus=1, require_gpu=True)
    assert explicit.require_gpu


@pytest.mark.parametrize(
    ("version", "message"),
    [
        (
            {"name": "v1", "require_gpu": True},
            "require_gpu needs num_gpus > 0",
        ),
        (
            {"name": "v1", "placement": "router", "require_gpu": True},
            "require_gpu needs a version in its own replicas",
        ),
        (
            {"name": "v1", "runtime": "python", "num_gpus": 1, "require_gpu": True},
            "require_gpu is for onnx versions: a python version",
        ),
        (
            {
                "name": "v1",
                "runtime": "triton",
                "triton": {"url": "127.0.0.1:8001", "model_name": "m"},
                "num_gpus": 1,
                "require_gpu": True,
            },
            "require_gpu is for onnx versions: a triton version",
        ),
    ],
)
def test_require_gpu_without_a_gpu_to_require_is_a_config_error(
    version: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError) as raised:
        parse_spec(versions(version))
    assert "args.models.0.versions.0:" in str(raised.value)
    assert message in str(raised.value)


def test_transport_defaults_to_the_handle_and_direct_parses() -> None:
    spec = parse_spec(versions({"name": "v1"}, {"name": "v2", "transport": "direct"}))
    model = spec.model("digits")
    assert model.version("v1").transport == "handle"
    assert model.version("v2").transport == "direct"


@pytest.mark.parametrize(
    ("version", "message"),
    [
        (
            {"name": "v1", "placement": "router", "transport": "direct"},
            "transport: direct is for versions in their own replicas",
        ),
        (
            {
                "name": "v1",
                "transport": "direct",
                "autoscaling": {"policy": "serve"},
            },
            "transport: direct needs autoscaling.policy: rayfleet",
        ),
        ({"name": "v1", "transport": "grpc"}, "transport"),
    ],
)
def test_direct_transport_where_it_cannot_work_is_a_config_error(
    version: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError) as raised:
        parse_spec(versions(version))
    assert "args.models.0.versions.0" in str(raised.value)
    assert message in str(raised.value)


def test_weights_canaries_start_at_zero_and_the_rest_share() -> None:
    model = parse_spec(
        versions(
            {"name": "v1"},
            {"name": "v2", "canary": True},
            {"name": "v3", "canary": True, "weight": 5},
        )
    ).model("digits")
    assert model.initial_weights() == {"v1": 95.0, "v2": 0.0, "v3": 5.0}


def test_a_model_with_no_traffic_is_refused() -> None:
    with pytest.raises(ConfigError, match="no version gets traffic"):
        parse_spec(versions({"name": "v1", "weight": 0}))


def test_spec_is_immutable() -> None:
    parsed = parse_spec(spec())
    with pytest.raises(ValueError):
        parsed.store = "/elsewhere"  # type: ignore[misc]


# -- the evidence a rollback needs ----------------------------------------------


def test_rollback_evidence_settings_are_read_and_checked() -> None:
    args = gates(latency_confidence=0.95)
    args["models"][0]["rollout"]["failure_threshold"] = 5
    rollout = parse_spec(args).model("digits").rollout
    assert rollout is not None
    assert (rollout.failure_threshold, rollout.gates.latency_confidence) == (5, 0.95)


@pytest.mark.parametrize(
    ("field", "value", "where"),
    [
        ("latency_confidence", 0.5, "rollout.gates.latency_confidence"),
        ("latency_confidence", 1.0, "rollout.gates.latency_confidence"),
        ("failure_threshold", 0, "rollout.failure_threshold"),
    ],
)
def test_rollback_evidence_settings_refuse_nonsense(
    field: str, value: float, where: str
) -> None:
    args = gates()
    if field == "failure_threshold":
        args["models"][0]["rollout"][field] = value
    else:
        args["models"][0]["rollout"]["gates"][field] = value
    with pytest.raises(ConfigError, match=where):
        parse_spec(args)


# -- keys renamed in 0.2.0, read with a warning until 0.3.0 --------------------


def gates(**given: Any) -> dict[str, Any]:
    rollout = {"gates": given}
    return spec(
        models=[
            {
                "name": "digits",
                "versions": [{"name": "v1"}, {"name": "v2", "canary": True}],
                "rollout": rollout,
            }
        ]
    )


def gate_spec(args: dict[str, Any]) -> GateSpec:
    rollout = parse_spec(args).model("digits").rollout
    assert rollout is not None
    return rollout.gates


@pytest.mark.parametrize(
    ("old", "new", "value"),
    [
        ("max_p50_ratio", "max_model_p50_ratio", 1.2),
        ("max_p99_ratio", "max_model_p99_ratio", None),
        ("max_p99_ms", "max_e2e_p99_ms", 250.0),
        ("min_shadow_agreement", "min_agreement", 0.8),
    ],
)
def test_renamed_gate_keys_are_read_with_a_warning(
    old: str, new: str, value: float | None
) -> None:
    with pytest.warns(FutureWarning, match=f"'{old}' .* is now '{new}'.*0.3.0"):
        parsed = gate_spec(gates(**{old: value}))
    assert getattr(parsed, new) == value
    assert gate_spec(gates(**{new: value})) == parsed


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("max_p50_ratio", "max_model_p50_ratio"),
        ("max_p99_ratio", "max_model_p99_ratio"),
        ("max_p99_ms", "max_e2e_p99_ms"),
        ("min_shadow_agreement", "min_agreement"),
    ],
)
def test_a_gate_key_given_under_both_names_is_refused(old: str, new: str) -> None:
    with pytest.raises(ConfigError) as raised:
        parse_spec(gates(**{old: 1.0, new: 1.0}))
    text = str(raised.value)
    assert "args.models.0.rollout.gates:" in text
    assert f"'{old}' is the old name of '{new}': give only '{new}'" in text


def test_the_validation_key_is_read_as_observations_with_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with (
        caplog.at_level(logging.WARNING, "rayfleet.platform.config.base"),
        pytest.warns(FutureWarning, match="'validation' .* is now 'observations'"),
    ):
        parsed = parse_spec(spec(validation={"sample_rate": 0.5, "bucket_s": 5}))
    assert parsed.observations == ObservationSpec(sample_rate=0.5, bucket_s=5)
    assert parse_spec(spec(observations={"sample_rate": 0.5, "bucket_s": 5})) == (
        parsed
    )
    # What `serve deploy` leaves in the Serve logs, at most once per process.
    logged = [r for r in caplog.records if "'validation'" in r.getMessage()]
    assert len(logged) <= 1


def test_observations_and_validation_together_are_refused() -> None:
    with pytest.raises(ConfigError, match="give only 'observations'"):
        parse_spec(spec(validation={}, observations={}))


def test_renamed_keys_warn_through_the_python_api_too() -> None:
    with pytest.warns(FutureWarning, match="'min_shadow_agreement'"):
        assert GateSpec(min_shadow_agreement=0.7) == GateSpec(  # type: ignore[call-arg]
            min_agreement=0.7
        )


def test_max_decoded_bytes_follows_the_body_limit_unless_set() -> None:
    assert RouterSpec().max_decoded_bytes == 4 * RouterSpec().max_body_bytes
    assert RouterSpec(max_body_bytes=1000).max_decoded_bytes == 4000
    given = RouterSpec.model_validate({"max_body_bytes": 1000, "max_decoded_bytes": 7})
    assert given.max_decoded_bytes == 7
    with pytest.raises(ValidationError, match="max_decoded_bytes"):
        RouterSpec(max_decoded_bytes=0)


def test_the_request_log_is_off_unless_turned_on() -> None:
    log = parse_spec(spec()).request_log
    assert (log.enabled, log.sample_rate, log.flush_every_s) == (False, 0.1, 60.0)
    assert (log.flush_max_rows, log.max_buffer_bytes) == (100_000, 64 * 1024 * 1024)
    on = parse_spec(spec(request_log={"enabled": True, "sample_rate": 1})).request_log
    assert (on.enabled, on.sample_rate) == (True, 1.0)


@pytest.mark.parametrize(
    ("block", "field", "message"),
    [
        (
            {"sample_rate": 1.5},
            "sample_rate",
            "Input should be less than or equal to 1",
        ),
        ({"max_buffer_bytes": 0}, "max_buffer_bytes", "Input should be greater than 0"),
        ({"flush_every_s": 0}, "flush_every_s", "Input should be greater than 0"),
        ({"enable": True}, "enable", "Extra inputs are not permitted"),
    ],
)
def test_a_request_log_block_that_does_not_fit_names_its_field(
    block: dict[str, Any], field: str, message: str
) -> None:
    with pytest.raises(ConfigError) as raised:
        parse_spec(spec(request_log=block))
    assert f"args.request_log.{field}: {message}" in str(raised.value)
