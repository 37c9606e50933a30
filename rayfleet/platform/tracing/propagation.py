"""W3C trace context in and out of carriers: HTTP headers, gRPC metadata, and the
small dict a router sends a replica with each request.

Only the W3C ``traceparent`` and ``tracestate`` travel, whatever
``OTEL_PROPAGATORS`` says: they are what Triton, collectors and webhook receivers
understand, and baggage could carry a client's data further than it meant to go.
"""

from __future__ import annotations

from collections.abc import Mapping

from opentelemetry.context import Context
from opentelemetry.trace.propagation.tracecontext import (
    TraceContextTextMapPropagator,
)

__all__ = ["TRACEPARENT", "context_from", "trace_headers"]

TRACEPARENT = "traceparent"

_W3C = TraceContextTextMapPropagator()


def trace_headers() -> dict[str, str]:
    """``traceparent`` (and ``tracestate``, when set) naming the span current in
    this context; empty when there is none, so a call made outside any trace
    carries nothing."""
    carrier: dict[str, str] = {}
    _W3C.inject(carrier)
    return carrier


def context_from(carrier: Mapping[str, str]) -> Context:
    """The context whose parent is the span ``carrier`` names (lower-case keys, as
    HTTP/2, Starlette and gRPC metadata give them); an empty context, so a new
    trace, when it names none or names it badly."""
    return _W3C.extract(carrier)
