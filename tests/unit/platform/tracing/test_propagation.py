"""W3C trace context out of the current span and in from carriers."""

from __future__ import annotations

import pytest

from rayfleet.platform.tracing import (
    TRACEPARENT,
    SpanContext,
    context_from,
    trace_headers,
)
from tests.unit.platform.tracing.memory import memory_tracing, traceparent


def test_outside_a_span_no_headers() -> None:
    assert trace_headers() == {}


def test_inside_a_span_its_traceparent() -> None:
    with memory_tracing() as memory:
        with memory.tracing.request_span({}, {}) as span:
            headers = trace_headers()
        context = span.context
    # Version, trace id, span id, then flags: sampled.
    version, trace_id, span_id, flags = headers.pop(TRACEPARENT).split("-")
    assert headers == {}
    assert (version, trace_id, span_id) == (
        "00",
        f"{context.trace_id:032x}",
        f"{context.span_id:016x}",
    )
    assert flags == "01"


def test_tracestate_travels_with_traceparent() -> None:
    carrier = {"traceparent": traceparent(1, 2), "tracestate": "vendor=abc"}
    with memory_tracing() as memory, memory.tracing.request_span(carrier, {}):
        headers = trace_headers()
    assert headers["tracestate"] == "vendor=abc"
    assert headers[TRACEPARENT].startswith(f"00-{1:032x}-")


def test_context_from_a_carrier_names_its_span() -> None:
    context = context_from({"traceparent": traceparent(7, 9, sampled=False)})
    assert context == SpanContext(7, 9, sampled=False)


def test_an_unsampled_span_passes_on_its_decision() -> None:
    carrier = {"traceparent": traceparent(7, 9, sampled=False)}
    with memory_tracing() as memory, memory.tracing.request_span(carrier, {}):
        headers = trace_headers()
    assert headers[TRACEPARENT].startswith(f"00-{7:032x}-")
    assert headers[TRACEPARENT].endswith("-00")
    assert memory.spans() == []


@pytest.mark.parametrize(
    "value",
    [
        "garbage",
        "",
        # all-zero trace id, then all-zero span id
        f"00-{0:032x}-{9:016x}-01",
        f"00-{7:032x}-{0:016x}-01",
        # upper-case hex, version ff, version 00 with more fields
        f"00-{0xAB:032X}-{9:016x}-01",
        f"ff-{7:032x}-{9:016x}-01",
        f"00-{7:032x}-{9:016x}-01-extra",
        # wrong separators and lengths
        f"00_{7:032x}-{9:016x}-01",
        f"00-{7:031x}-{9:017x}-01",
    ],
)
def test_a_bad_traceparent_is_a_new_trace(value: str) -> None:
    assert context_from({"traceparent": value}) is None


def test_a_later_version_may_carry_more_fields() -> None:
    value = f"01-{7:032x}-{9:016x}-01-more"
    assert context_from({"traceparent": value}) == SpanContext(7, 9, sampled=True)


def test_context_from_nothing_is_a_new_trace() -> None:
    for carrier in ({}, {"other": "x"}):
        assert context_from(carrier) is None


@pytest.mark.parametrize("state", ["a" * 513, "vendor=\u00e9", "vendor=a\nb"])
def test_a_tracestate_too_long_or_not_printable_ascii_is_dropped(state: str) -> None:
    carrier = {"traceparent": traceparent(7, 9), "tracestate": state}
    context = context_from(carrier)
    assert context is not None and context.tracestate is None
