"""A :class:`Tracing` whose spans stay in memory, for tests that read them back.

The spans are decoded from the OTLP protobuf bytes a collector would receive,
with OpenTelemetry's generated classes, so every test that reads one also checks
rayfleet's encoder.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1 import trace_pb2
from opentelemetry.trace import SpanKind, StatusCode

from rayfleet.platform.config.tracing import TracingSpec
from rayfleet.platform.tracing import Tracing

ENDPOINT = "http://collector.invalid:4318/v1/traces"

_KINDS = {
    trace_pb2.Span.SPAN_KIND_INTERNAL: SpanKind.INTERNAL,
    trace_pb2.Span.SPAN_KIND_SERVER: SpanKind.SERVER,
    trace_pb2.Span.SPAN_KIND_CLIENT: SpanKind.CLIENT,
}
_STATUSES = {
    trace_pb2.Status.STATUS_CODE_UNSET: StatusCode.UNSET,
    trace_pb2.Status.STATUS_CODE_OK: StatusCode.OK,
    trace_pb2.Status.STATUS_CODE_ERROR: StatusCode.ERROR,
}


@dataclass(frozen=True)
class Ids:
    """A span's identity (``context``) or its parent's (``parent``)."""

    trace_id: int
    span_id: int
    is_remote: bool = False


@dataclass(frozen=True)
class Status:
    status_code: StatusCode
    description: str


@dataclass(frozen=True)
class Event:
    name: str
    attributes: dict[str, Any]


@dataclass(frozen=True)
class Resource:
    attributes: dict[str, Any]


@dataclass(frozen=True)
class Span:
    """One span as a collector received it."""

    name: str
    kind: SpanKind
    context: Ids
    parent: Ids | None
    attributes: dict[str, Any]
    status: Status
    events: list[Event]
    resource: Resource
    start_time: int
    end_time: int
    trace_state: str


def _value(value: AnyValue) -> Any:
    return getattr(value, value.WhichOneof("value") or "string_value")


def _attributes(pairs: Any) -> dict[str, Any]:
    found: dict[str, Any] = {}
    pair: KeyValue
    for pair in pairs:
        found[pair.key] = _value(pair.value)
    return found


def decode(body: bytes) -> list[Span]:
    """The spans of one ``ExportTraceServiceRequest``."""
    request = ExportTraceServiceRequest.FromString(body)
    spans: list[Span] = []
    for resource_spans in request.resource_spans:
        resource = Resource(_attributes(resource_spans.resource.attributes))
        for scope_spans in resource_spans.scope_spans:
            assert scope_spans.scope.name == "rayfleet"
            for span in scope_spans.spans:
                trace_id = int.from_bytes(span.trace_id, "big")
                parent = None
                if span.parent_span_id:
                    parent = Ids(
                        trace_id,
                        int.from_bytes(span.parent_span_id, "big"),
                        bool(span.flags & trace_pb2.SPAN_FLAGS_CONTEXT_IS_REMOTE_MASK),
                    )
                spans.append(
                    Span(
                        name=span.name,
                        kind=_KINDS[span.kind],
                        context=Ids(trace_id, int.from_bytes(span.span_id, "big")),
                        parent=parent,
                        attributes=_attributes(span.attributes),
                        status=Status(_STATUSES[span.status.code], span.status.message),
                        events=[
                            Event(event.name, _attributes(event.attributes))
                            for event in span.events
                        ],
                        resource=resource,
                        start_time=span.start_time_unix_nano,
                        end_time=span.end_time_unix_nano,
                        trace_state=span.trace_state,
                    )
                )
    return spans


class Collected:
    """A sink that keeps what it is sent, decoded."""

    def __init__(self) -> None:
        self.spans: list[Span] = []
        self.lock = threading.Lock()

    def __call__(self, body: bytes) -> bool:
        decoded = decode(body)
        with self.lock:
            self.spans.extend(decoded)
        return True


class MemoryTracing:
    """A tracing of its own, and the spans it finished so far."""

    def __init__(self, **spec: Any) -> None:
        self.collected = Collected()
        self.tracing = Tracing(
            TracingSpec(enabled=True, otlp_endpoint=ENDPOINT, **spec), self.collected
        )

    def spans(self) -> list[Span]:
        """Every span finished, oldest first."""
        self.tracing.flush()
        with self.collected.lock:
            return list(self.collected.spans)

    def named(self, name: str) -> list[Span]:
        """The finished spans called ``name``."""
        return [span for span in self.spans() if span.name == name]


@contextmanager
def memory_tracing(**spec: Any) -> Iterator[MemoryTracing]:
    """A :class:`MemoryTracing`, closed on the way out."""
    memory = MemoryTracing(**spec)
    try:
        yield memory
    finally:
        memory.tracing.close()


def traceparent(trace_id: int, span_id: int, sampled: bool = True) -> str:
    """A W3C ``traceparent`` header value."""
    return f"00-{trace_id:032x}-{span_id:016x}-{'01' if sampled else '00'}"
