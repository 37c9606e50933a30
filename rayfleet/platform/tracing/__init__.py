"""Distributed tracing, OpenTelemetry-compatible, off unless the spec's
``tracing`` turns it on (:class:`~rayfleet.platform.config.tracing.TracingSpec`).

A request's trace: the router's ``rayfleet.infer`` span (parent: the caller's
W3C ``traceparent``, when one came), and under it one ``rayfleet.replica`` span
for the version's run, in a model replica or in the router. The router sends its
span's context to the replica with the request; a Triton runtime sends the
current ``traceparent`` to its server, and webhooks to their receivers, so their
own spans join the same trace. :mod:`.tracer` makes the spans,
:mod:`.propagation` moves their context in and out of headers, and :mod:`.otlp`
sends them to a collector over OTLP/HTTP.
"""

from rayfleet.platform.tracing.otlp import FinishedSpan, OtlpHttpSender
from rayfleet.platform.tracing.propagation import (
    TRACEPARENT,
    TRACESTATE,
    SpanContext,
    context_from,
    trace_headers,
)
from rayfleet.platform.tracing.tracer import (
    REPLICA_SPAN,
    REQUEST_SPAN,
    ActiveSpan,
    Choice,
    Sink,
    Tracing,
    choice_of,
    tracing_for,
)

__all__ = [
    "REPLICA_SPAN",
    "REQUEST_SPAN",
    "TRACEPARENT",
    "TRACESTATE",
    "ActiveSpan",
    "Choice",
    "FinishedSpan",
    "OtlpHttpSender",
    "Sink",
    "SpanContext",
    "Tracing",
    "choice_of",
    "context_from",
    "trace_headers",
    "tracing_for",
]
