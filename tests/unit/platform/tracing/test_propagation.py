"""W3C trace context out of the current span and in from carriers."""

from __future__ import annotations

from opentelemetry.trace import get_current_span

from rayfleet.platform.tracing import TRACEPARENT, context_from, trace_headers
from tests.unit.platform.tracing.memory import memory_tracing, traceparent


def test_outside_a_span_no_headers() -> None:
    assert trace_headers() == {}


def test_inside_a_span_its_traceparent() -> None:
    with memory_tracing() as memory:
        with memory.tracing.request_span({}, {}) as span:
            headers = trace_headers()
        context = span.span.get_span_context()
    # Version, trace id, span id, then flags: sampled (and W3C level 2's
    # "random trace id" bit, which the SDK's ids are).
    version, trace_id, span_id, flags = headers.pop(TRACEPARENT).split("-")
    assert headers == {}
    assert (version, trace_id, span_id) == (
        "00",
        f"{context.trace_id:032x}",
        f"{context.span_id:016x}",
    )
    assert int(flags, 16) & 1


def test_tracestate_travels_with_traceparent() -> None:
    carrier = {"traceparent": traceparent(1, 2), "tracestate": "vendor=abc"}
    with memory_tracing() as memory, memory.tracing.request_span(carrier, {}):
        headers = trace_headers()
    assert headers["tracestate"] == "vendor=abc"
    assert headers[TRACEPARENT].startswith(f"00-{1:032x}-")


def test_context_from_a_carrier_names_its_span_as_remote_parent() -> None:
    context = context_from({"traceparent": traceparent(7, 9, sampled=False)})
    parent = get_current_span(context).get_span_context()
    assert (parent.trace_id, parent.span_id, parent.is_remote) == (7, 9, True)
    assert not parent.trace_flags.sampled


def test_context_from_nothing_is_a_new_trace() -> None:
    for carrier in ({}, {"traceparent": "garbage"}, {"other": "x"}):
        assert not get_current_span(context_from(carrier)).get_span_context().is_valid
