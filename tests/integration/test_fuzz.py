"""The fuzz suite's fast part against the real Serve app, over real sockets.

The same strategies as the in-process run (:mod:`tests.fuzz_strategies`), a few
hundred requests in all: HTTP through HAProxy to the router, gRPC to its gRPC
port, the admin API forwarded to the Validator. Here a dropped connection is a
failure too. Admin requests with the token name models the shared app does not
serve, so that a valid body cannot change the rollouts other tests watch.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import grpc
import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from rayfleet.cli.demo import digits_split
from tests.fuzz_strategies import (
    FAILED_GRPC_CODES,
    GOOD_PATH,
    TALLY,
    HttpCase,
    admin_requests,
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

from .conftest import ADMIN_TOKEN

# Each test is bounded: hypothesis's examples, and this wall-clock limit.
pytestmark = pytest.mark.timeout(240)

ROWS = digits_split()[1][:4]
APP = (("application", "rayfleet"),)
MODEL_INFER = "/inference.GRPCInferenceService/ModelInfer"


@pytest.fixture(scope="module")
def labels(serve_url: str) -> list[int]:
    response = httpx.post(f"{serve_url}{GOOD_PATH}", json=good_body(ROWS), timeout=30)
    assert response.status_code == 200
    (label,) = [o for o in response.json()["outputs"] if o["name"] == "label"]
    return list(label["data"])


def _fuzz(http: httpx.Client, labels: list[int], case: HttpCase) -> None:
    send(http, case, over_socket=True)
    check_good(http, ROWS, labels)


@fuzz_settings(60)
@given(case=st.one_of(v2_json_requests(), v2_binary_requests()))
def test_fuzz_v2(http: httpx.Client, labels: list[int], case: HttpCase) -> None:
    _fuzz(http, labels, case)


@fuzz_settings(40)
@given(case=st.one_of(v1_requests(), arrow_requests()))
def test_fuzz_v1_and_arrow(
    http: httpx.Client, labels: list[int], case: HttpCase
) -> None:
    _fuzz(http, labels, case)


@fuzz_settings(40)
@given(case=raw_requests())
def test_fuzz_raw_bytes(http: httpx.Client, labels: list[int], case: HttpCase) -> None:
    _fuzz(http, labels, case)


@fuzz_settings(40)
@given(
    case=st.one_of(
        admin_requests(ADMIN_TOKEN, models=("fuzz-no-such-model",)),
        admin_requests(None),
    )
)
def test_fuzz_admin(http: httpx.Client, labels: list[int], case: HttpCase) -> None:
    _fuzz(http, labels, case)


@pytest.fixture(scope="module")
def model_infer(grpc_url: str) -> Iterator[Any]:
    """ModelInfer taking and giving bytes: the message is sent as generated."""
    with grpc.insecure_channel(grpc_url) as channel:
        yield channel.unary_unary(MODEL_INFER)


@fuzz_settings(60)
@given(wire=grpc_messages())
def test_fuzz_grpc_model_infer(
    model_infer: Any, http: httpx.Client, labels: list[int], wire: bytes
) -> None:
    TALLY.sent("grpc")
    try:
        model_infer(wire, metadata=APP, timeout=30)
    except grpc.RpcError as error:
        code, details = error.code(), error.details()
        if code in FAILED_GRPC_CODES or not details:
            TALLY.failures += 1
            raise AssertionError(f"{code} {details!r} for {wire!r}") from None
    check_good(http, ROWS, labels)
