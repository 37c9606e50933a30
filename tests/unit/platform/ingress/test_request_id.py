"""``x-request-id``: echoed when safe, generated otherwise, on every answer of the
router's HTTP app and in its gRPC trailers; never a client's value unchecked."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route
from starlette.testclient import TestClient
from tritonclient.grpc import service_pb2

from rayfleet.platform.ingress.grpc import GrpcInference
from rayfleet.platform.ingress.http import build_http_app
from rayfleet.platform.ingress.request_id import (
    RequestIdMiddleware,
    request_id_of,
    resolve_request_id,
    safe_request_id,
)
from tests.fuzz_strategies import fuzz_settings
from tests.unit.platform.serving.test_service import Logged, build

SAFE = re.compile(r"[A-Za-z0-9._:-]{1,128}")
GENERATED = re.compile(r"[0-9a-f]{32}")
# What an HTTP client can put in a header value: visible Latin-1 and spaces.
HEADER_VALUES = st.text(
    alphabet=st.characters(
        min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"
    ),
    max_size=200,
)
SAFE_IDS = st.from_regex(SAFE, fullmatch=True)


@given(st.text(max_size=300))
def test_an_id_is_kept_exactly_when_it_is_safe(value: str) -> None:
    safe = safe_request_id(value)
    assert safe == (value if SAFE.fullmatch(value) else None)
    resolved = resolve_request_id(value)
    assert SAFE.fullmatch(resolved)
    assert resolved == value or GENERATED.fullmatch(resolved)


@given(SAFE_IDS)
def test_every_safe_id_is_kept(value: str) -> None:
    assert resolve_request_id(value) == value


@pytest.mark.parametrize(
    "value",
    ["", "a" * 129, "a b", "a\tb", "ä", "a/b", "a,b", "{x}", "id\x00", "x" * 5000],
)
def test_unsafe_or_missing_ids_are_replaced(value: str) -> None:
    assert safe_request_id(value) is None
    assert safe_request_id(None) is None
    first, second = resolve_request_id(value), resolve_request_id(value)
    assert GENERATED.fullmatch(first) and first != second


def echo_app(host_echoes: bool = False) -> Starlette:
    async def handler(request: Request) -> Response:
        # A handler's own x-request-id never doubles the header.
        return PlainTextResponse(
            request_id_of(request), headers={"x-request-id": "from-the-handler"}
        )

    return Starlette(
        routes=[Route("/", handler)],
        middleware=[Middleware(RequestIdMiddleware, host_echoes=host_echoes)],
    )


@fuzz_settings(100)
@given(st.one_of(HEADER_VALUES, SAFE_IDS, st.none()))
def test_the_answer_carries_the_id_the_handler_saw(sent: str | None) -> None:
    headers = {} if sent is None else {b"x-request-id": sent.encode("latin-1")}
    with TestClient(echo_app()) as client:
        response = client.get("/", headers=headers)
    [echoed] = response.headers.get_list("x-request-id")
    assert echoed == response.text
    if sent is not None and SAFE.fullmatch(sent):
        assert echoed == sent
    else:
        assert GENERATED.fullmatch(echoed)


@fuzz_settings(100)
@given(st.one_of(HEADER_VALUES, SAFE_IDS))
def test_behind_serve_the_header_is_added_only_when_the_id_was_replaced(
    sent: str,
) -> None:
    # Serve's middleware answers with the request's own header: a safe id is in
    # the request, and adding it again would send it twice.
    with TestClient(echo_app(host_echoes=True)) as client:
        response = client.get("/", headers={b"x-request-id": sent.encode("latin-1")})
    added = response.headers.get_list("x-request-id")
    if SAFE.fullmatch(sent):
        assert response.text == sent and added == ["from-the-handler"]
    else:
        assert added == [response.text] and GENERATED.fullmatch(response.text)


def test_every_answer_of_the_router_app_carries_the_id_the_log_keeps(
    tmp_path: Path,
) -> None:
    service, _, _ = build(tmp_path)
    service.request_log = log = Logged()
    body = {
        "inputs": [
            {"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}
        ]
    }
    with TestClient(build_http_app(service)) as client:
        answered = client.post(
            "/v2/models/m/infer", json=body, headers={"x-request-id": "trace-7"}
        )
        generated = client.post("/v2/models/m/infer", json=body)
        v1 = client.post("/v1/models/m:predict", json={"instances": [[1, 2, 3, 4]]})
        errors = [
            client.post("/v2/models/m/infer", content=b"{"),
            client.get("/v2/models/nope"),
            client.get("/no/such/route"),
            client.get("/v2/health/live", headers={"x-request-id": "bad id"}),
        ]
    assert answered.status_code == 200
    assert answered.headers["x-request-id"] == "trace-7"
    assert [c["id"] for c in log.calls] == [
        "trace-7",
        generated.headers["x-request-id"],
        v1.headers["x-request-id"],
    ]
    assert [e.status_code for e in errors] == [400, 404, 404, 200]
    for response in (generated, v1, *errors):
        assert GENERATED.fullmatch(response.headers["x-request-id"])


class Context:
    """Serve's gRPC context, as far as ModelInfer uses it."""

    def __init__(self, metadata: list[tuple[str, Any]], serve_id: str = "") -> None:
        self.metadata = metadata
        self.trailing = [("request_id", serve_id)] if serve_id else []
        self.code: Any = None

    def invocation_metadata(self) -> list[tuple[str, Any]]:
        return self.metadata

    def trailing_metadata(self) -> list[tuple[str, str]]:
        return self.trailing

    def set_trailing_metadata(self, metadata: list[tuple[str, str]]) -> None:
        # Serve keeps its own request_id beside what the method sets.
        self.trailing = [(k, v) for k, v in self.trailing if k == "request_id"]
        self.trailing += metadata

    def set_code(self, code: Any) -> None:
        self.code = code

    def set_details(self, details: str) -> None:
        pass


@pytest.mark.parametrize(
    ("metadata", "serve_id", "expected"),
    [
        ([("x-request-id", "trace-7")], "serve-1", "trace-7"),
        (
            [],
            "0b5e3f8e-5a0c-4b5e-9c1d-2f3a4b5c6d7e",
            "0b5e3f8e-5a0c-4b5e-9c1d-2f3a4b5c6d7e",
        ),
        ([("x-request-id", "bad id")], "", None),
        ([("x-request-id-bin", b"\x00")], "", None),
    ],
)
def test_a_grpc_call_answers_with_its_id_in_the_trailers(
    tmp_path: Path, metadata: list[tuple[str, Any]], serve_id: str, expected: str | None
) -> None:
    service, _, _ = build(tmp_path)
    service.request_log = log = Logged()
    router = GrpcInference()
    router.service = service
    message = service_pb2.ModelInferRequest(model_name="m")
    tensor = message.inputs.add(name="x", datatype="FP32", shape=[1, 4])
    tensor.contents.fp32_contents.extend([1, 2, 3, 4])
    context = Context(metadata, serve_id)
    asyncio.run(router.ModelInfer(message.SerializeToString(), context))
    assert context.code is None
    ours = [v for k, v in context.trailing if k == "x-request-id"]
    assert len(ours) == 1
    assert ours[0] == expected if expected else GENERATED.fullmatch(ours[0])
    assert [c["id"] for c in log.calls] == ours
    if serve_id:
        assert ("request_id", serve_id) in context.trailing
    # An error's answer carries it too.
    missing = Context(metadata, serve_id)
    asyncio.run(
        router.ModelInfer(
            service_pb2.ModelInferRequest(model_name="nope").SerializeToString(),
            missing,
        )
    )
    assert [k for k, _ in missing.trailing].count("x-request-id") == 1


def test_an_app_without_the_middleware_reads_a_safe_header() -> None:
    async def handler(request: Request) -> Response:
        return PlainTextResponse(request_id_of(request))

    app = Starlette(routes=[Route("/", handler)])
    with TestClient(app) as client:
        assert client.get("/", headers={"x-request-id": "fwd-1"}).text == "fwd-1"
        assert GENERATED.fullmatch(
            client.get("/", headers={"x-request-id": "a b"}).text
        )
        assert "x-request-id" not in client.get("/").headers
