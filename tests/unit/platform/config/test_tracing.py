"""The spec's ``tracing`` block: off by default, an http(s) endpoint when on."""

from __future__ import annotations

from typing import Any

import pytest

from rayfleet.platform.config.spec import parse_spec
from rayfleet.platform.config.tracing import TracingSpec
from rayfleet.platform.errors import ConfigError


def spec(**tracing: Any) -> dict[str, Any]:
    return {
        "store": "/models",
        "tracing": tracing,
        "models": [{"name": "m", "versions": [{"name": "v1"}]}],
    }


def test_tracing_is_off_unless_turned_on() -> None:
    tracing = parse_spec(spec()).tracing
    assert tracing == TracingSpec()
    assert (tracing.enabled, tracing.otlp_endpoint) == (False, None)
    assert (tracing.sample_rate, tracing.service_name) == (1.0, "rayfleet")
    assert tracing.export_every_s == 5.0


def test_turned_on_with_an_endpoint() -> None:
    tracing = parse_spec(
        spec(
            enabled=True,
            otlp_endpoint="https://collector.example:4318/v1/traces",
            sample_rate=0.1,
            service_name="fleet-eu",
        )
    ).tracing
    assert tracing.enabled
    assert tracing.otlp_endpoint == "https://collector.example:4318/v1/traces"
    assert (tracing.sample_rate, tracing.service_name) == (0.1, "fleet-eu")


@pytest.mark.parametrize(
    ("block", "field", "message"),
    [
        ({"enabled": True}, "", "needs an otlp_endpoint"),
        ({"otlp_endpoint": "collector:4318"}, "otlp_endpoint", "must be http(s)"),
        ({"otlp_endpoint": "grpc://collector:4317"}, "otlp_endpoint", "http(s)"),
        ({"otlp_endpoint": "http:///v1/traces"}, "otlp_endpoint", "with a host"),
        ({"sample_rate": 1.5}, "sample_rate", "less than or equal to 1"),
        ({"service_name": ""}, "service_name", "at least 1 character"),
        ({"export_every_s": 0}, "export_every_s", "greater than 0"),
        ({"endpoint": "http://c:4318"}, "endpoint", "Extra inputs"),
    ],
)
def test_a_tracing_block_that_does_not_fit_names_its_field(
    block: dict[str, Any], field: str, message: str
) -> None:
    with pytest.raises(ConfigError) as raised:
        parse_spec(spec(**block))
    path = "args.tracing" + (f".{field}" if field else "")
    assert f"{path}: " in str(raised.value)
    assert message in str(raised.value)


def test_a_bad_endpoint_error_hides_its_credentials() -> None:
    with pytest.raises(ConfigError) as raised:
        parse_spec(spec(otlp_endpoint="ftp://user:hunter2@collector/v1?key=k"))
    assert "hunter2" not in str(raised.value)
    assert "key=k" not in str(raised.value)


def test_an_endpoint_with_credentials_is_refused_without_echoing_them() -> None:
    with pytest.raises(ConfigError) as raised:
        parse_spec(spec(otlp_endpoint="http://user:s3cret@collector:4318/v1/traces"))
    assert "args.tracing.otlp_endpoint: " in str(raised.value)
    assert "OTEL_EXPORTER_OTLP_TRACES_HEADERS" in str(raised.value)
    assert "s3cret" not in str(raised.value)
