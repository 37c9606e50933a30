"""Fuzzing the router's HTTP and gRPC apps in process: every format, hostile input.

Each test draws requests of one format from :mod:`tests.fuzz_strategies` and
sends them over the demo's digits models, without Ray or a socket. Every HTTP
answer must be below 500 with a JSON ``error`` for a 4xx; every gRPC call must
end OK or with a status naming the client's mistake (never INTERNAL or UNKNOWN);
and a good request sent after each must still be answered correctly. ``make
fuzz`` runs these and the admin ones (``test_admin.py``) with
``RAYFLEET_FUZZ=long``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from starlette.testclient import TestClient

from rayfleet.cli.demo import build_demo_store, digits_split
from rayfleet.platform.config.spec import parse_spec
from rayfleet.platform.config.store import ModelStore
from rayfleet.platform.ingress.grpc import GrpcInference
from rayfleet.platform.ingress.http import build_http_app
from rayfleet.platform.serving.buffer import ObservationBuffer
from rayfleet.platform.serving.inprocess import InProcessBackend, load_runners
from rayfleet.platform.serving.service import InferenceService
from rayfleet.testing import encode_infer_request
from tests.fuzz_strategies import (
    FAILED_GRPC_CODES,
    GOOD_PATH,
    TALLY,
    HttpCase,
    arrow_requests,
    check_good,
    fuzz_settings,
    good_body,
    grpc_messages,
    raw_requests,
    send,
    v1_requests,
    v2_binary_requests,
    v2_json_requests,
)

ROWS = digits_split()[1][:4]


def build_service(store: Path) -> InferenceService:
    """The digits demo models in process: v1 stable, v2 a canary at 10%."""
    spec = parse_spec(
        {
            "store": str(store),
            "router": {"max_body_bytes": 64 * 1024},
            "observations": {"sample_rate": 1.0},
            "models": [
                {
                    "name": "digits",
                    "versions": [
                        {"name": "v1"},
                        {"name": "v2", "canary": True, "weight": 10},
                    ],
                }
            ],
        }
    )
    model_store = ModelStore(spec.store)
    manifests = {"digits": {v: model_store.manifest("digits", v) for v in ("v1", "v2")}}
    runners = load_runners(spec, manifests, placement=None)
    return InferenceService(
        spec, manifests, InProcessBackend(runners), recorder=ObservationBuffer(1000)
    )


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("store")
    build_demo_store(str(root))
    return root


@pytest.fixture(scope="module")
def client(store: Path) -> Iterator[TestClient]:
    with TestClient(build_http_app(build_service(store))) as test_client:
        yield test_client


@pytest.fixture(scope="module")
def labels(client: TestClient) -> list[int]:
    response = client.post(GOOD_PATH, json=good_body(ROWS))
    assert response.status_code == 200
    (label,) = [o for o in response.json()["outputs"] if o["name"] == "label"]
    assert np.asarray(label["data"]).shape == (len(ROWS),)
    return list(label["data"])


def _fuzz(client: TestClient, labels: list[int], case: HttpCase) -> None:
    send(client, case)
    check_good(client, ROWS, labels)


@fuzz_settings(60)
@given(case=v2_json_requests())
def test_fuzz_v2_json(client: TestClient, labels: list[int], case: HttpCase) -> None:
    _fuzz(client, labels, case)


@fuzz_settings(60)
@given(case=v2_binary_requests())
def test_fuzz_v2_binary(client: TestClient, labels: list[int], case: HttpCase) -> None:
    _fuzz(client, labels, case)


@fuzz_settings(40)
@given(case=v1_requests())
def test_fuzz_v1(client: TestClient, labels: list[int], case: HttpCase) -> None:
    _fuzz(client, labels, case)


@fuzz_settings(50)
@given(case=arrow_requests())
def test_fuzz_arrow(client: TestClient, labels: list[int], case: HttpCase) -> None:
    _fuzz(client, labels, case)


@fuzz_settings(40)
@given(case=raw_requests())
def test_fuzz_raw_bytes(client: TestClient, labels: list[int], case: HttpCase) -> None:
    _fuzz(client, labels, case)


@fuzz_settings(20)
@given(case=st.one_of(v2_json_requests(), arrow_requests(), raw_requests()))
def test_fuzz_formats_mixed(
    client: TestClient, labels: list[int], case: HttpCase
) -> None:
    _fuzz(client, labels, case)


# -- gRPC ModelInfer, called as Serve calls it --------------------------------


class Context:
    """What the RPCs use of Serve's gRPC context."""

    def __init__(self) -> None:
        self.code: Any = grpc.StatusCode.OK
        self.details = ""
        self.trailing: list[tuple[str, str]] = []

    def set_code(self, code: Any) -> None:
        self.code = code

    def set_details(self, details: str) -> None:
        self.details = details

    def invocation_metadata(self) -> list[tuple[str, str]]:
        return [("application", "rayfleet")]

    def trailing_metadata(self) -> list[tuple[str, str]]:
        return self.trailing

    def set_trailing_metadata(self, metadata: list[tuple[str, str]]) -> None:
        self.trailing = list(metadata)


class Servicer(GrpcInference):
    def __init__(self, service: InferenceService) -> None:
        self.service = service


class Harness:
    """The servicer and one event loop to call it on, for the whole module."""

    def __init__(self, store: Path) -> None:
        self.loop = asyncio.new_event_loop()
        self.servicer = Servicer(build_service(store))

    def infer(self, wire: bytes) -> tuple[Any, Context]:
        context = Context()
        reply = self.loop.run_until_complete(self.servicer.ModelInfer(wire, context))
        return reply, context

    def labels(self) -> list[int]:
        message = encode_infer_request("digits", {"input": ROWS}, version="v1")
        reply, context = self.infer(message.SerializeToString())
        assert context.code == grpc.StatusCode.OK, context.details
        names = [output.name for output in reply.outputs]
        raw = reply.raw_output_contents[names.index("label")]
        return np.frombuffer(raw, dtype="<i8").tolist()


@pytest.fixture(scope="module")
def harness(store: Path) -> Iterator[Harness]:
    harness = Harness(store)
    yield harness
    # The in-router versions' batcher workers live on this loop: stopped, and
    # their cancellation run, before the loop closes (else Python warns, later,
    # that a pending task was destroyed).
    harness.servicer.service.backend.close()
    harness.loop.run_until_complete(asyncio.sleep(0))
    harness.loop.close()


@fuzz_settings(80)
@given(wire=grpc_messages())
def test_fuzz_grpc_model_infer(
    harness: Harness, labels: list[int], wire: bytes
) -> None:
    """ModelInfer as Serve calls it, with the serialized message and a context."""
    TALLY.sent("grpc")
    try:
        _, context = harness.infer(wire)
    except Exception as error:  # the RPC must never raise: Serve would drop it
        TALLY.failures += 1
        raise AssertionError(f"ModelInfer raised on {wire!r}: {error!r}") from error
    if context.code in FAILED_GRPC_CODES or (
        context.code != grpc.StatusCode.OK and not context.details
    ):
        TALLY.failures += 1
        raise AssertionError(f"{context.code} {context.details!r} for {wire!r}")
    TALLY.sent("good")
    if harness.labels() != labels:
        TALLY.failures += 1
        raise AssertionError("a good request then got other labels")
