"""Measurement 1: peak memory of one request per format, through the router's own
code over the model loaded in this process (``tracemalloc``)."""

from __future__ import annotations

import asyncio
import gc
import tracemalloc
from dataclasses import dataclass
from typing import Any

import numpy as np

from loadtest.bench_payloads.profile import Payload, payloads
from loadtest.common import STORE
from loadtest.targets import bench_args
from rayfleet.platform.config.spec import parse_spec
from rayfleet.platform.config.store import ModelStore
from rayfleet.platform.ingress.grpc import GrpcInference
from rayfleet.platform.ingress.http import build_http_app
from rayfleet.platform.serving.buffer import ObservationBuffer
from rayfleet.platform.serving.inprocess import InProcessBackend, load_runners
from rayfleet.platform.serving.service import InferenceService
from rayfleet.platform.validation.observation import summarize_inputs

__all__ = ["MemoryRow", "measure_memory", "summary_peak"]


class _Context:
    """The part of Serve's gRPC context the router's methods use."""

    def __init__(self) -> None:
        self.code: Any = None
        self.details = ""
        self.trailing: list[tuple[str, str]] = []

    def set_code(self, code: Any) -> None:
        self.code = code

    def set_details(self, details: str) -> None:
        self.details = details

    def invocation_metadata(self) -> list[tuple[str, str]]:
        return []

    def trailing_metadata(self) -> list[tuple[str, str]]:
        return self.trailing

    def set_trailing_metadata(self, metadata: list[tuple[str, str]]) -> None:
        self.trailing = list(metadata)


class _InProcessRouter(GrpcInference):
    """The router's gRPC methods over an in-process service."""

    def __init__(self, service: InferenceService) -> None:
        self.service = service


def _in_process_service() -> InferenceService:
    args = bench_args(str(STORE), model="image")
    args["observations"]["sample_rate"] = 1.0
    spec = parse_spec(args)
    store = ModelStore(spec.store)
    manifests = {"image": {"v1": store.manifest("image", "v1")}}
    runners = load_runners(spec, manifests, placement=None)
    # With the router's own recorder, so each request's observation is counted.
    return InferenceService(
        spec, manifests, InProcessBackend(runners), recorder=ObservationBuffer(100)
    )


async def _asgi_post(app: Any, payload: Payload) -> bytes:
    """One POST through the ASGI app, the body arriving in one piece."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/v2/models/image/infer",
        "raw_path": b"/v2/models/image/infer",
        "root_path": "",
        "query_string": b"",
        "headers": [
            (b"content-length", str(len(payload.body)).encode()),
            *((k.encode(), v.encode()) for k, v in payload.headers.items()),
        ],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
    }
    delivered = False
    status = 0
    chunks: list[bytes] = []

    async def receive() -> dict[str, Any]:
        nonlocal delivered
        if delivered:
            return {"type": "http.disconnect"}
        delivered = True
        return {"type": "http.request", "body": payload.body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
        elif message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))

    await app(scope, receive, send)
    body = b"".join(chunks)
    if status != 200:
        raise RuntimeError(f"{payload.format}: HTTP {status}: {body[:200]!r}")
    return body


async def _grpc_call(router: _InProcessRouter, payload: Payload) -> bytes:
    """One ModelInfer, handed the serialized request as Serve's gRPC server hands
    it to the router; answered and serialized."""
    context = _Context()
    reply = await router.ModelInfer(payload.body, context)
    if context.code is not None:
        raise RuntimeError(f"grpc: {context.code}: {context.details}")
    wire: bytes = reply.SerializeToString()
    return wire


@dataclass(frozen=True)
class MemoryRow:
    """Peak memory of one request in one format."""

    format: str
    request_bytes: int
    response_bytes: int
    peak_bytes: int


def measure_memory(images: np.ndarray) -> list[MemoryRow]:
    """Peak memory of one request per format, through the router's code."""
    service = _in_process_service()
    app = build_http_app(service)
    router = _InProcessRouter(service)

    async def once(payload: Payload) -> bytes:
        if payload.format == "grpc":
            return await _grpc_call(router, payload)
        return await _asgi_post(app, payload)

    rows = []
    for payload in payloads(images).values():
        asyncio.run(once(payload))  # warm: first-call caches are not per request
        gc.collect()
        tracemalloc.start()
        base = tracemalloc.get_traced_memory()[0]
        response = asyncio.run(once(payload))
        peak = tracemalloc.get_traced_memory()[1] - base
        tracemalloc.stop()
        rows.append(MemoryRow(payload.format, len(payload.body), len(response), peak))
    return rows


def summary_peak(images: np.ndarray) -> int:
    """Peak memory of the observation summary the router makes of a request."""
    tracemalloc.start()
    summarize_inputs({"image": images})
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak
