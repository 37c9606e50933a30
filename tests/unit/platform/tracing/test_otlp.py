"""The OTLP encoder against OpenTelemetry's generated classes, and the sender
against a real HTTP server on loopback."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from opentelemetry.sdk.trace.sampling import Decision, TraceIdRatioBased

from rayfleet.platform.config.tracing import TracingSpec
from rayfleet.platform.tracing import FinishedSpan, OtlpHttpSender, Tracing
from rayfleet.platform.tracing.otlp import (
    KIND_INTERNAL,
    KIND_SERVER,
    SpanEncoder,
    SpanEvent,
    headers_from_env,
)
from rayfleet.platform.tracing.tracer import (
    EXPORT_BATCH,
    MAX_HELD,
    REPEATED_ATTRIBUTES,
)
from tests.unit.platform.tracing.memory import (
    ENDPOINT,
    MemoryTracing,
    decode,
    memory_tracing,
)

keys = st.text(min_size=1, max_size=20)
values = st.one_of(
    st.text(max_size=40),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=False),
)
attributes = st.dictionaries(keys, values, max_size=6)
ids64 = st.integers(min_value=1, max_value=2**64 - 1)


@st.composite
def finished_spans(draw: st.DrawFn) -> FinishedSpan:
    start = draw(st.integers(min_value=0, max_value=2**63))
    return FinishedSpan(
        name=draw(st.text(min_size=1, max_size=30)),
        kind=draw(st.sampled_from([KIND_INTERNAL, KIND_SERVER])),
        trace_id=draw(st.integers(min_value=1, max_value=2**128 - 1)),
        span_id=draw(ids64),
        parent_id=draw(st.none() | ids64),
        parent_is_remote=draw(st.booleans()),
        tracestate=draw(st.none() | st.text(min_size=1, max_size=30)),
        start_ns=start,
        end_ns=start + draw(st.integers(min_value=0, max_value=10**12)),
        attributes=draw(attributes),
        error=draw(st.none() | st.text(max_size=20)),
        events=tuple(
            SpanEvent(name, time_ns, event_attributes)
            for name, time_ns, event_attributes in draw(
                st.lists(
                    st.tuples(
                        st.text(min_size=1, max_size=10),
                        st.integers(min_value=0, max_value=2**64 - 1),
                        attributes,
                    ),
                    max_size=2,
                )
            )
        ),
    )


@given(st.lists(finished_spans(), min_size=1, max_size=5), attributes)
def test_what_the_encoder_writes_decodes_to_the_same_spans(
    spans: list[FinishedSpan], resource: dict[str, Any]
) -> None:
    # One encoder for every example: its string cache must not mix up fields.
    messages = [ENCODER.span(span) for span in spans]
    decoded = decode(ENCODER.request(messages, resource, "rayfleet", "1.2.3"))
    assert len(decoded) == len(spans)
    for span, found in zip(spans, decoded, strict=True):
        assert found.name == span.name
        assert (found.context.trace_id, found.context.span_id) == (
            span.trace_id,
            span.span_id,
        )
        if span.parent_id is None:
            assert found.parent is None
        else:
            assert found.parent is not None
            assert found.parent.span_id == span.parent_id
            assert found.parent.is_remote == span.parent_is_remote
        assert found.trace_state == (span.tracestate or "")
        assert (found.start_time, found.end_time) == (span.start_ns, span.end_ns)
        assert found.attributes == span.attributes
        assert found.resource.attributes == resource
        assert [(event.name, event.attributes) for event in found.events] == [
            (event.name, dict(event.attributes)) for event in span.events
        ]
        assert found.status.status_code.name == (
            "UNSET" if span.error is None else "ERROR"
        )
        assert found.status.description == (span.error or "")


ENCODER = SpanEncoder()


def test_an_integer_past_int64_is_sent_as_its_text() -> None:
    span = FinishedSpan(
        "s", KIND_INTERNAL, 1, 2, None, False, None, 0, 1, {"big": 2**70}
    )
    encoder = SpanEncoder()
    (found,) = decode(encoder.request([encoder.span(span)], {}, "rayfleet", "0"))
    assert found.attributes == {"big": str(2**70)}


@given(
    st.integers(min_value=1, max_value=2**128 - 1),
    st.sampled_from([0.0, 0.001, 0.1, 0.5, 0.999, 1.0]),
)
def test_sampling_keeps_the_traces_the_sdks_ratio_sampler_keeps(
    trace_id: int, rate: float
) -> None:
    tracing = Tracing(
        TracingSpec(enabled=True, otlp_endpoint=ENDPOINT, sample_rate=rate),
        lambda body: True,
    )
    try:
        sdk = TraceIdRatioBased(rate).should_sample(None, trace_id, "s").decision
        assert tracing.samples(trace_id) == (sdk is Decision.RECORD_AND_SAMPLE)
    finally:
        tracing.close()


def test_a_full_queue_drops_and_counts() -> None:
    blocked = threading.Event()

    def slow(body: bytes) -> bool:
        blocked.wait(10)
        return True

    tracing = Tracing(
        TracingSpec(enabled=True, otlp_endpoint=ENDPOINT, export_every_s=3600), slow
    )
    try:
        for _ in range(2 * MAX_HELD):
            with tracing.request_span({}, {}):
                pass
        # The export thread holds at most one batch in the stuck sink.
        assert tracing.dropped >= MAX_HELD - EXPORT_BATCH
    finally:
        blocked.set()
        tracing.close()


def test_a_sink_that_fails_counts_what_it_lost() -> None:
    tracing = Tracing(
        TracingSpec(enabled=True, otlp_endpoint=ENDPOINT, export_every_s=3600),
        lambda body: False,
    )
    for _ in range(3):
        with tracing.request_span({}, {}):
            pass
    tracing.flush()
    assert tracing.undelivered == 3
    tracing.close()


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({}, {}),
        (
            {"OTEL_EXPORTER_OTLP_HEADERS": "api-key=s%3Dcret, X-Team = ml "},
            {"api-key": "s=cret", "x-team": "ml"},
        ),
        (
            {
                "OTEL_EXPORTER_OTLP_HEADERS": "a=general",
                "OTEL_EXPORTER_OTLP_TRACES_HEADERS": "b=traces",
            },
            {"b": "traces"},
        ),
        ({"OTEL_EXPORTER_OTLP_HEADERS": "novalue,=x,k=v"}, {"k": "v"}),
    ],
)
def test_collector_headers_come_from_the_environment(
    environ: dict[str, str], expected: dict[str, str]
) -> None:
    assert headers_from_env(environ) == expected


class Collector:
    """An HTTP server on 127.0.0.1 answering each POST with the next status."""

    def __init__(self, statuses: list[int]) -> None:
        self.statuses = statuses
        self.bodies: list[bytes] = []
        self.headers: list[Message] = []
        collector = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                collector.bodies.append(
                    self.rfile.read(int(self.headers["Content-Length"]))
                )
                collector.headers.append(self.headers)
                status = collector.statuses.pop(0) if collector.statuses else 200
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1/traces"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def collector(request: pytest.FixtureRequest) -> Iterator[Collector]:
    server = Collector(list(getattr(request, "param", [])))
    yield server
    server.server.shutdown()
    server.server.server_close()


@pytest.mark.parametrize(
    ("collector", "delivered", "posts", "waits"),
    [
        ([200], True, 1, []),
        ([503, 429, 200], True, 3, [0.5, 1.0]),
        ([503, 503, 503, 503], False, 4, [0.5, 1.0, 2.0]),
        ([400], False, 1, []),
    ],
    indirect=["collector"],
)
def test_the_sender_retries_what_the_collector_asks_to(
    collector: Collector, delivered: bool, posts: int, waits: list[float]
) -> None:
    slept: list[float] = []
    sender = OtlpHttpSender(collector.url, headers={"api-key": "k"}, sleep=slept.append)
    assert sender(b"body") is delivered
    assert len(collector.bodies) == posts
    assert slept == waits
    assert collector.headers[0]["Content-Type"] == "application/x-protobuf"
    assert collector.headers[0]["api-key"] == "k"


def test_an_unreachable_collector_is_given_up_on() -> None:
    slept: list[float] = []
    # A port nothing listens on: the connection is refused at once.
    sender = OtlpHttpSender("http://127.0.0.1:9/v1/traces", sleep=slept.append)
    assert sender(b"body") is False
    assert slept == [0.5, 1.0, 2.0]


def test_spans_reach_a_collector_over_http(collector: Collector) -> None:
    tracing = Tracing(TracingSpec(enabled=True, otlp_endpoint=collector.url))
    with tracing.request_span({}, {"url.path": "/v2"}):
        pass
    tracing.close()
    (body,) = collector.bodies
    (span,) = decode(body)
    assert span.attributes == {"url.path": "/v2"}
    assert span.resource.attributes["service.name"] == "rayfleet"


def test_a_lone_surrogate_in_an_error_is_sent_replaced_and_fails_nothing() -> None:
    with memory_tracing() as memory:
        with pytest.raises(RuntimeError), memory.tracing.request_span({}, {}):
            raise RuntimeError("bad byte \udcff from the model")
        (span,) = memory.spans()
    (event,) = span.events
    assert event.attributes["exception.message"] == "bad byte ? from the model"


def test_spans_ended_after_close_are_dropped_and_counted() -> None:
    memory = MemoryTracing()
    memory.tracing.close()
    with memory.tracing.request_span({}, {}):
        pass
    assert memory.tracing.dropped == 1
    assert memory.collected.spans == []


def test_only_repeated_short_values_are_cached() -> None:
    encoder = SpanEncoder(REPEATED_ATTRIBUTES)
    for index in range(5000):
        span = FinishedSpan(
            "s",
            KIND_SERVER,
            1,
            2,
            None,
            False,
            None,
            0,
            1,
            {
                "rayfleet.model": "digits",
                "rayfleet.request_id": f"{index:032x}",
                "url.path": f"/v2/models/{'m' * 200}{index}/infer",
            },
        )
        encoder.span(span)
    # One cached pair, the model: ids, and paths too long to cache, are not held.
    assert len(encoder._pairs) == 1


def test_a_redirect_is_a_failure_not_a_delivery(collector: Collector) -> None:
    collector.statuses = [302]
    sender = OtlpHttpSender(collector.url, headers={}, sleep=lambda s: None)
    assert sender(b"body") is False
    assert sender.last_failure == "HTTP 302"
    assert len(collector.bodies) == 1


def test_a_header_value_that_is_not_printable_is_skipped() -> None:
    environ = {"OTEL_EXPORTER_OTLP_HEADERS": "a=ok,b=x%0D%0AInjected:%201"}
    assert headers_from_env(environ) == {"a": "ok"}
