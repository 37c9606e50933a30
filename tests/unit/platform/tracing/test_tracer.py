"""The spans of one process: built from the spec, parented by the carrier, with
the status and cost of a request."""

from __future__ import annotations

import threading
import time

import pytest
from opentelemetry.trace import SpanKind, StatusCode

from rayfleet.platform.config.tracing import TracingSpec
from rayfleet.platform.errors import ModelNotFound, ServiceUnavailable
from rayfleet.platform.tracing import (
    REPLICA_SPAN,
    REQUEST_SPAN,
    Tracing,
    tracing_for,
)
from tests.unit.platform.tracing.memory import (
    ENDPOINT,
    MemoryTracing,
    memory_tracing,
    traceparent,
)

TRACE_ID = 0x0AF7651916CD43DD8448EB211C80319C
PARENT_ID = 0xB7AD6B7169203331


def test_off_by_default_builds_nothing() -> None:
    assert tracing_for(TracingSpec()) is None


def test_on_builds_a_tracing_that_exports_over_otlp_http() -> None:
    tracing = tracing_for(TracingSpec(enabled=True, otlp_endpoint=ENDPOINT))
    assert isinstance(tracing, Tracing)
    # No span was made, so closing sends nothing and does not wait.
    tracing.close()
    tracing.close()


def test_a_request_span_without_traceparent_starts_a_trace() -> None:
    with memory_tracing(service_name="fleet-a") as memory:
        with memory.tracing.request_span({}, {"url.path": "/v2"}) as span:
            span.set_status(200)
        (found,) = memory.spans()
    assert found.name == REQUEST_SPAN
    assert found.kind is SpanKind.SERVER
    assert found.parent is None
    assert dict(found.attributes or {}) == {"url.path": "/v2", "rayfleet.status": 200}
    assert found.status.status_code is StatusCode.UNSET
    assert found.resource.attributes["service.name"] == "fleet-a"


def test_a_request_span_continues_the_callers_trace() -> None:
    carrier = {"traceparent": traceparent(TRACE_ID, PARENT_ID)}
    with memory_tracing() as memory:
        with memory.tracing.request_span(carrier, {}):
            pass
        (found,) = memory.spans()
    assert found.context is not None and found.parent is not None
    assert found.context.trace_id == TRACE_ID
    assert found.parent.span_id == PARENT_ID
    assert found.parent.is_remote


def test_a_malformed_traceparent_starts_a_new_trace() -> None:
    with memory_tracing() as memory:
        with memory.tracing.request_span({"traceparent": "00-zz-yy-01"}, {}):
            pass
        (found,) = memory.spans()
    assert found.parent is None


@pytest.mark.parametrize(
    ("error", "status", "code"),
    [
        (ModelNotFound("no model 'x'"), 404, StatusCode.UNSET),
        (ServiceUnavailable("m/v1 cannot take the request now"), 503, StatusCode.ERROR),
        (RuntimeError("a bug"), 500, StatusCode.ERROR),
    ],
)
def test_an_error_is_recorded_with_its_status(
    error: Exception, status: int, code: StatusCode
) -> None:
    with memory_tracing() as memory:
        with (
            pytest.raises(type(error)),
            memory.tracing.request_span({}, {}),
        ):
            raise error
        (found,) = memory.spans()
    assert found.attributes is not None
    assert found.attributes["rayfleet.status"] == status
    assert found.status.status_code is code
    (event,) = found.events
    assert event.name == "exception"
    assert event.attributes is not None
    assert str(event.attributes["exception.type"]).endswith(type(error).__name__)


def test_annotate_choice_names_the_version_on_the_current_span() -> None:
    with memory_tracing() as memory:
        with memory.tracing.request_span({}, {}):
            memory.tracing.annotate_choice("digits", "v2", "sticky", "req-1", 4)
        with memory.tracing.request_span({}, {}):
            memory.tracing.annotate_choice("digits", "v1", "weight", None, 1)
        first, second = memory.spans()
    assert dict(first.attributes or {}) == {
        "rayfleet.model": "digits",
        "rayfleet.version": "v2",
        "rayfleet.choice": "sticky",
        "rayfleet.request_id": "req-1",
        "rayfleet.rows": 4,
    }
    assert "rayfleet.request_id" not in (second.attributes or {})


def test_a_replica_span_is_a_child_of_the_span_its_carrier_names() -> None:
    carrier = {"traceparent": traceparent(TRACE_ID, PARENT_ID)}
    with memory_tracing() as memory:
        with memory.tracing.replica_span("digits", "v2", "replica", carrier) as span:
            span.record_run(model_ms=3.0, batch_size=4, elapsed_ms=5.5)
        (found,) = memory.spans()
    assert found.name == REPLICA_SPAN
    assert found.kind is SpanKind.INTERNAL
    assert found.context is not None and found.parent is not None
    assert (found.context.trace_id, found.parent.span_id) == (TRACE_ID, PARENT_ID)
    assert dict(found.attributes or {}) == {
        "rayfleet.model": "digits",
        "rayfleet.version": "v2",
        "rayfleet.placement": "replica",
        "rayfleet.model_ms": 3.0,
        "rayfleet.batch_size": 4,
        "rayfleet.queue_wait_ms": 2.5,
    }


def test_a_replica_span_without_carrier_is_a_child_of_the_current_span() -> None:
    with memory_tracing() as memory:
        with (
            memory.tracing.request_span({}, {}),
            memory.tracing.replica_span("digits", "v1", "router"),
        ):
            pass
        child, parent = memory.spans()
    assert child.parent is not None and parent.context is not None
    assert child.parent.span_id == parent.context.span_id
    assert child.context is not None
    assert child.context.trace_id == parent.context.trace_id


def test_queue_wait_is_never_negative() -> None:
    with memory_tracing() as memory:
        with memory.tracing.replica_span("m", "v", "router") as span:
            # A zero-row request: no model ran, the clock's rounding can cross.
            span.record_run(model_ms=0.2, batch_size=0, elapsed_ms=0.1)
        (found,) = memory.spans()
    assert found.attributes is not None
    assert found.attributes["rayfleet.queue_wait_ms"] == 0.0


def test_sampling_keeps_a_share_of_new_traces_and_follows_the_caller() -> None:
    memory = MemoryTracing(sample_rate=0.0)
    try:
        with memory.tracing.request_span({}, {}):
            pass
        assert memory.spans() == []
        sampled = {"traceparent": traceparent(TRACE_ID, PARENT_ID, sampled=True)}
        with memory.tracing.request_span(sampled, {}):
            pass
        assert len(memory.spans()) == 1
    finally:
        memory.tracing.close()


def test_close_sends_what_is_held() -> None:
    memory = MemoryTracing(export_every_s=3600)
    with memory.tracing.request_span({}, {}):
        pass
    memory.tracing.close()
    assert len(memory.collected.spans) == 1


def test_close_waits_no_longer_than_its_timeout() -> None:
    release = threading.Event()

    def stuck(body: bytes) -> bool:
        """A collector that never answers."""
        release.wait(30)
        return False

    tracing = Tracing(TracingSpec(enabled=True, otlp_endpoint=ENDPOINT), stuck)
    with tracing.request_span({}, {}):
        pass
    started = time.monotonic()
    tracing.close(timeout_s=0.2)
    assert time.monotonic() - started < 2
    release.set()
