"""The ``tracing`` part of the spec: OpenTelemetry spans, exported over OTLP/HTTP.

Only what a config says lives here; the spans themselves are made by
:mod:`rayfleet.platform.tracing`.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from pydantic import Field, PositiveFloat, field_validator, model_validator

from rayfleet.platform.config.base import Spec
from rayfleet.platform.config.webhook import redact_url

__all__ = ["TracingSpec"]


class TracingSpec(Spec):
    """Distributed tracing of inference requests, off by default.

    With ``enabled``, every router and model replica process sends its spans to
    ``otlp_endpoint``, the full OTLP/HTTP traces URL of a collector (e.g.
    ``http://collector:4318/v1/traces``), in batches every ``export_every_s``.
    ``sample_rate`` is the share of new traces kept; a request that arrives with
    a W3C ``traceparent`` follows its caller's decision instead (parent-based
    sampling). ``service_name`` is the ``service.name`` of the spans' resource.
    Headers the collector needs (an API key) come from the standard
    ``OTEL_EXPORTER_OTLP_TRACES_HEADERS`` environment variable, never from the
    config, which is not a place for secrets.
    """

    enabled: bool = False
    otlp_endpoint: str | None = Field(
        default=None,
        description="OTLP/HTTP traces URL, e.g. http://host:4318/v1/traces",
    )
    sample_rate: float = Field(default=1.0, ge=0, le=1)
    service_name: str = Field(default="rayfleet", min_length=1, max_length=255)
    # OpenTelemetry's batch default: spans leave in batches, off the request path.
    export_every_s: PositiveFloat = 5.0

    @field_validator("otlp_endpoint")
    @classmethod
    def _http_url(cls, url: str | None) -> str | None:
        if url is None:
            return None
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(
                "otlp_endpoint must be http(s) with a host, e.g. "
                f"'http://collector:4318/v1/traces'; got {redact_url(url)!r}"
            )
        if parts.username is not None or parts.password is not None:
            raise ValueError(
                "otlp_endpoint must not carry credentials: the spec is no place "
                "for secrets. Put them in the environment instead, e.g. "
                "OTEL_EXPORTER_OTLP_TRACES_HEADERS='Authorization=Basic%20...'; "
                f"got {redact_url(url)!r}"
            )
        return url

    @model_validator(mode="after")
    def _endpoint_when_enabled(self) -> TracingSpec:
        if self.enabled and self.otlp_endpoint is None:
            raise ValueError("tracing.enabled needs an otlp_endpoint to send spans to")
        return self
