"""Tracing on real Serve: one request's router span and replica span reach an
OTLP/HTTP collector from their two processes, in the caller's trace."""

from __future__ import annotations

import gzip
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from ray import serve

from rayfleet.deployments.app import build

from .conftest import delete_app, digits_body
from .test_rollout import ROWS, rollout_args, wait_for

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"


@dataclass(frozen=True)
class Span:
    name: str
    service: str
    trace_id: str
    span_id: str
    parent_id: str
    attributes: dict[str, Any]


def _value(value: AnyValue) -> Any:
    return getattr(value, value.WhichOneof("value") or "string_value")


class Collector:
    """An OTLP/HTTP traces endpoint on 127.0.0.1 that keeps every span sent."""

    def __init__(self) -> None:
        self.spans: list[Span] = []
        self.lock = threading.Lock()
        collector = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                if self.path != "/v1/traces":
                    self.send_error(404)
                    return
                collector.keep(ExportTraceServiceRequest.FromString(body))
                reply = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1/traces"

    def keep(self, request: ExportTraceServiceRequest) -> None:
        for resource_spans in request.resource_spans:
            resource = {
                a.key: _value(a.value) for a in resource_spans.resource.attributes
            }
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    found = Span(
                        name=span.name,
                        service=resource.get("service.name", ""),
                        trace_id=span.trace_id.hex(),
                        span_id=span.span_id.hex(),
                        parent_id=span.parent_span_id.hex(),
                        attributes={a.key: _value(a.value) for a in span.attributes},
                    )
                    with self.lock:
                        self.spans.append(found)

    def named(self, name: str) -> list[Span]:
        with self.lock:
            return [span for span in self.spans if span.name == name]


@pytest.fixture
def collector() -> Iterator[Collector]:
    collector = Collector()
    thread = threading.Thread(target=collector.server.serve_forever, daemon=True)
    thread.start()
    try:
        yield collector
    finally:
        collector.server.shutdown()
        collector.server.server_close()


def test_router_and_replica_spans_of_one_request_share_its_trace(
    serve_url: str, store: Path, collector: Collector
) -> None:
    args = rollout_args(
        store,
        [{"name": "digits", "versions": [{"name": "v1", "placement": "replica"}]}],
        tracing={
            "enabled": True,
            "otlp_endpoint": collector.url,
            "service_name": "rayfleet-it",
            "export_every_s": 0.2,
        },
    )
    serve.run(build(args), name="tracing", route_prefix="/tracing")
    try:
        response = httpx.post(
            f"{serve_url}/tracing/v2/models/digits/infer",
            json=digits_body(ROWS[:3]),
            headers={
                "traceparent": f"00-{TRACE_ID}-{CALLER_SPAN}-01",
                "x-request-id": "traced-1",
            },
            timeout=30,
        )
        assert response.status_code == 200
        [router] = wait_for(lambda: collector.named("rayfleet.infer"), 60, "router")
        [replica] = wait_for(
            lambda: collector.named("rayfleet.replica"), 60, "replica span"
        )
    finally:
        delete_app("tracing")
    assert (router.trace_id, router.parent_id) == (TRACE_ID, CALLER_SPAN)
    assert (replica.trace_id, replica.parent_id) == (TRACE_ID, router.span_id)
    assert router.service == replica.service == "rayfleet-it"
    assert router.attributes["rayfleet.request_id"] == "traced-1"
    assert router.attributes["rayfleet.version"] == "v1"
    assert router.attributes["rayfleet.choice"] == "weight"
    assert router.attributes["rayfleet.rows"] == 3
    assert router.attributes["rayfleet.status"] == 200
    assert replica.attributes["rayfleet.placement"] == "replica"
    assert replica.attributes["rayfleet.batch_size"] >= 1
    assert replica.attributes["rayfleet.model_ms"] > 0
