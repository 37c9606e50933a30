"""Tracing through the router's HTTP app, over versions run in this process: one
request is a router span and a replica span under it, in one trace."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
import pytest
from opentelemetry.trace import SpanKind, StatusCode
from starlette.testclient import TestClient

from rayfleet.platform.config.signature import Signature, TensorSpec
from rayfleet.platform.config.spec import BatchingSpec, parse_spec
from rayfleet.platform.config.store import Manifest, PythonEntry
from rayfleet.platform.ingress.http import build_http_app
from rayfleet.platform.runtimes.device import PYTHON, Device
from rayfleet.platform.serving.inprocess import InProcessBackend
from rayfleet.platform.serving.runner import VersionRunner
from rayfleet.platform.serving.service import InferenceService
from rayfleet.platform.tracing import REPLICA_SPAN, REQUEST_SPAN, trace_headers
from tests.unit.platform.tracing.memory import (
    MemoryTracing,
    Span,
    memory_tracing,
    traceparent,
)

SIGNATURE = Signature(
    inputs=(TensorSpec(name="x", datatype="FP32", shape=(-1, 3)),),
    outputs=(TensorSpec(name="y", datatype="FP32", shape=(-1,)),),
)
MANIFEST = Manifest(
    runtime="python", signature=SIGNATURE, python=PythonEntry(callable="m:load")
)
BODY = {"inputs": [{"name": "x", "shape": [2, 3], "datatype": "FP32", "data": [1] * 6}]}
TRACE_ID = 0x4BF92F3577B34DA6A3CE929D0E0E4736
PARENT_ID = 0x00F067AA0BA902B7


class Summer:
    """Sums each row, and notes the trace context each call ran in, as a Triton
    runtime would send it on."""

    device = Device(provider=PYTHON, gpu_requested=False)

    def __init__(self, fail: bool = False) -> None:
        self.fail = fail
        self.seen: list[dict[str, str]] = []

    def predict(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.seen.append(trace_headers())
        if self.fail:
            raise RuntimeError("weights are corrupt")
        return {"y": inputs["x"].sum(axis=1)}


class App:
    """The HTTP app over ``summer`` v1 (weight 100) and v2 (pinned only, broken)."""

    def __init__(self, memory: MemoryTracing | None) -> None:
        spec = parse_spec(
            {
                "store": "/unused",
                "models": [
                    {
                        "name": "summer",
                        "versions": [{"name": "v1"}, {"name": "v2", "weight": 0}],
                    }
                ],
            }
        )
        self.v1, self.v2 = Summer(), Summer(fail=True)
        tracing = None if memory is None else memory.tracing
        backend = InProcessBackend(
            {
                "summer": {
                    name: VersionRunner(
                        "summer",
                        name,
                        runtime,  # type: ignore[arg-type]
                        SIGNATURE,
                        BatchingSpec(),
                        placement="router",
                        tracing=tracing,
                    )
                    for name, runtime in (("v1", self.v1), ("v2", self.v2))
                }
            }
        )
        manifests = {"summer": {"v1": MANIFEST, "v2": MANIFEST}}
        self.service = InferenceService(spec, manifests, backend, tracing=tracing)
        self.client = TestClient(build_http_app(self.service))

    def infer(self, path: str = "/v2/models/summer/infer", **headers: str) -> Any:
        return self.client.post(path, json=BODY, headers=headers)


@pytest.fixture
def memory() -> Iterator[MemoryTracing]:
    with memory_tracing() as memory:
        yield memory


@pytest.fixture
def app(memory: MemoryTracing) -> Iterator[App]:
    app = App(memory)
    with app.client:
        yield app


def the_request(memory: MemoryTracing) -> tuple[Span, Span]:
    """The router span and the replica span of the one request sent."""
    (router,) = memory.named(REQUEST_SPAN)
    (replica,) = memory.named(REPLICA_SPAN)
    return router, replica


def test_one_request_is_a_router_span_and_a_replica_span_in_one_trace(
    app: App, memory: MemoryTracing
) -> None:
    response = app.infer()
    assert response.status_code == 200
    router, replica = the_request(memory)
    assert router.context is not None and replica.context is not None
    assert replica.context.trace_id == router.context.trace_id
    assert replica.parent is not None
    assert replica.parent.span_id == router.context.span_id
    assert router.parent is None
    assert router.kind is SpanKind.SERVER
    assert dict(router.attributes or {}) == {
        "http.request.method": "POST",
        "url.path": "/v2/models/summer/infer",
        "rayfleet.model": "summer",
        "rayfleet.version": "v1",
        "rayfleet.choice": "weight",
        "rayfleet.request_id": response.headers["x-request-id"],
        "rayfleet.rows": 2,
        "rayfleet.status": 200,
    }
    attributes = dict(replica.attributes or {})
    assert attributes["rayfleet.model"] == "summer"
    assert attributes["rayfleet.version"] == "v1"
    assert attributes["rayfleet.placement"] == "router"
    assert attributes["rayfleet.batch_size"] == 1
    assert float(attributes["rayfleet.model_ms"]) >= 0  # type: ignore[arg-type]
    assert float(attributes["rayfleet.queue_wait_ms"]) >= 0  # type: ignore[arg-type]


def test_the_model_runs_under_the_replica_span(app: App, memory: MemoryTracing) -> None:
    app.infer()
    _, replica = the_request(memory)
    assert replica.context is not None
    ((trace_id, span_id),) = [
        tuple(seen["traceparent"].split("-")[1:3]) for seen in app.v1.seen
    ]
    assert (int(trace_id, 16), int(span_id, 16)) == (
        replica.context.trace_id,
        replica.context.span_id,
    )


def test_an_incoming_traceparent_is_honoured(app: App, memory: MemoryTracing) -> None:
    app.infer(traceparent=traceparent(TRACE_ID, PARENT_ID))
    router, replica = the_request(memory)
    assert router.context is not None and router.parent is not None
    assert router.context.trace_id == TRACE_ID
    assert router.parent.span_id == PARENT_ID
    assert replica.context is not None
    assert replica.context.trace_id == TRACE_ID


def test_an_unsampled_request_makes_no_span_and_passes_its_context_on(
    app: App, memory: MemoryTracing
) -> None:
    # The caller decided not to sample: no span here either (the version's run
    # in the router starts none at all), and the model still runs in the
    # caller's trace, unsampled, so a Triton server downstream agrees.
    app.infer(traceparent=traceparent(TRACE_ID, PARENT_ID, sampled=False))
    assert memory.spans() == []
    (seen,) = app.v1.seen
    version, trace_id, _span_id, flags = seen["traceparent"].split("-")
    assert (version, trace_id, flags) == ("00", f"{TRACE_ID:032x}", "00")


def test_the_client_request_id_is_on_the_span(app: App, memory: MemoryTracing) -> None:
    response = app.infer(**{"x-request-id": "order-42"})
    assert response.headers["x-request-id"] == "order-42"
    router, _ = the_request(memory)
    assert router.attributes is not None
    assert router.attributes["rayfleet.request_id"] == "order-42"


@pytest.mark.parametrize(
    ("path", "headers", "choice"),
    [
        ("/v2/models/summer/versions/v1/infer", {}, "pin"),
        ("/v2/models/summer/infer", {"x-model-version": "v1"}, "pin"),
        ("/v2/models/summer/infer", {"x-session-id": "user-7"}, "sticky"),
    ],
)
def test_how_the_version_was_chosen(
    app: App, memory: MemoryTracing, path: str, headers: dict[str, str], choice: str
) -> None:
    assert app.infer(path, **headers).status_code == 200
    router, _ = the_request(memory)
    assert router.attributes is not None
    assert router.attributes["rayfleet.choice"] == choice


def test_a_failing_model_marks_both_spans(app: App, memory: MemoryTracing) -> None:
    assert app.infer("/v2/models/summer/versions/v2/infer").status_code == 500
    router, replica = the_request(memory)
    assert router.attributes is not None
    assert router.attributes["rayfleet.status"] == 500
    assert router.attributes["rayfleet.version"] == "v2"
    assert router.status.status_code is StatusCode.ERROR
    assert replica.status.status_code is StatusCode.ERROR
    assert [event.name for event in replica.events] == ["exception"]


def test_a_client_error_is_a_span_but_not_an_error(
    app: App, memory: MemoryTracing
) -> None:
    assert app.infer("/v2/models/nothing/infer").status_code == 404
    (router,) = memory.spans()
    assert router.attributes is not None
    assert router.attributes["rayfleet.status"] == 404
    assert router.status.status_code is StatusCode.UNSET


def test_other_routes_are_not_traced(app: App, memory: MemoryTracing) -> None:
    assert app.client.get("/v2/health/ready").status_code == 200
    assert app.client.get("/v2/models/summer").status_code == 200
    assert memory.spans() == []


def test_tracing_off_makes_no_spans_and_sends_no_context(
    memory: MemoryTracing,
) -> None:
    app = App(None)
    with app.client:
        response = app.infer(traceparent=traceparent(TRACE_ID, PARENT_ID))
    assert response.status_code == 200
    assert app.service.tracing is None
    assert app.v1.seen == [{}]
    assert memory.spans() == []


@pytest.mark.parametrize(
    ("headers", "choice"),
    [
        ({}, "weight"),
        ({"x-session-id": "user-7"}, "sticky"),
        ({"x-model-version": "v1"}, "pin"),
    ],
)
def test_a_v1_request_names_how_its_route_chose(
    app: App, memory: MemoryTracing, headers: dict[str, str], choice: str
) -> None:
    # The v1 route chooses the version before it decodes, then pins it.
    response = app.client.post(
        "/v1/models/summer:predict", json={"instances": [[1, 1, 1]]}, headers=headers
    )
    assert response.status_code == 200
    router, _ = the_request(memory)
    assert router.attributes is not None
    assert router.attributes["rayfleet.choice"] == choice
