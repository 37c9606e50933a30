"""The router's gRPC methods without a server: status codes and details."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import grpc
import pytest
from tritonclient.grpc import service_pb2

from rayfleet.platform.config.signature import Signature
from rayfleet.platform.config.spec import parse_spec
from rayfleet.platform.config.store import Manifest
from rayfleet.platform.ingress.grpc import GrpcInference
from rayfleet.platform.serving.service import InferenceService
from rayfleet.platform.tracing import REQUEST_SPAN
from tests.unit.platform.tracing.memory import memory_tracing, traceparent


class Context:
    """What Serve's gRPC context offers the methods, recorded."""

    def __init__(self) -> None:
        self.code: grpc.StatusCode | None = None
        self.details: str | None = None
        self.trailing: list[tuple[str, str]] = []

    def set_code(self, code: grpc.StatusCode) -> None:
        self.code = code

    def set_details(self, details: str) -> None:
        self.details = details

    def invocation_metadata(self) -> list[tuple[str, str]]:
        return []

    def trailing_metadata(self) -> list[tuple[str, str]]:
        return self.trailing

    def set_trailing_metadata(self, metadata: list[tuple[str, str]]) -> None:
        self.trailing = list(metadata)


class Refuses:
    """A backend no test here should reach."""

    async def infer(self, *args: Any) -> Any:
        raise AssertionError("an unknown version reached the backend")

    async def ready(self, model: str, version: str) -> bool:
        return True


@pytest.fixture
def router(tmp_path: Path) -> GrpcInference:
    spec = parse_spec(
        {"store": str(tmp_path), "models": [{"name": "m", "versions": [{"name": "a"}]}]}
    )
    signature = Signature.model_validate(
        {
            "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1]}],
            "outputs": [{"name": "y", "datatype": "FP32", "shape": [-1]}],
        }
    )
    manifest = Manifest(runtime="python", signature=signature)
    router = GrpcInference()
    router.service = InferenceService(spec, {"m": {"a": manifest}}, Refuses())
    return router


@pytest.mark.parametrize("version", ["a\x00", "a\r\nx: 1", "\u20ac", "v" * 20_000])
def test_an_unknown_version_is_not_found_with_details_that_fit_a_trailer(
    router: GrpcInference, version: str
) -> None:
    message = service_pb2.ModelInferRequest(model_name="m", model_version=version)
    context = Context()
    reply = asyncio.run(router.ModelInfer(message.SerializeToString(), context))
    assert isinstance(reply, service_pb2.ModelInferResponse)
    assert context.code == grpc.StatusCode.NOT_FOUND
    # Past the client's 8 KiB metadata limit a client sees RESOURCE_EXHAUSTED.
    assert context.details is not None and "no version" in context.details
    assert len(context.details) <= 512


def test_a_traced_model_infer_is_a_span_under_the_callers_traceparent(
    router: GrpcInference,
) -> None:
    class Traced(Context):
        def invocation_metadata(self) -> list[tuple[str, str]]:
            return [("traceparent", traceparent(0xABC, 0xDEF))]

    message = service_pb2.ModelInferRequest(model_name="m", model_version="zz")
    with memory_tracing() as memory:
        router.service.tracing = memory.tracing
        asyncio.run(router.ModelInfer(message.SerializeToString(), Traced()))
        (span,) = memory.spans()
    assert span.name == REQUEST_SPAN
    assert span.context is not None and span.parent is not None
    assert (span.context.trace_id, span.parent.span_id) == (0xABC, 0xDEF)
    assert dict(span.attributes or {}) == {
        "rpc.system": "grpc",
        "rpc.method": "ModelInfer",
        "rayfleet.status": 404,
    }
