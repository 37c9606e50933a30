"""KServe v2 over gRPC, through Serve's gRPC ingress, with tritonclient.grpc.

Under rayfleet's Serve environment (HAProxy + direct ingress) the ``grpc_url``
port is HAProxy's gRPC frontend, forwarding HTTP/2 to the router replica's own
gRPC server. Every call names its application in the ``application`` metadata,
as clients must whenever more than one application runs (other tests deploy
their own beside the shared one).
"""

from __future__ import annotations

import contextlib
import pickle
import sys
from collections.abc import Iterator
from typing import Any

import grpc
import httpx
import numpy as np
import psutil
import pytest
import tritonclient.grpc as triton_grpc
import tritonclient.http as triton_http
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException

from rayfleet.cli.demo import digits_split
from rayfleet.platform.ingress import grpc as grpc_ingress
from rayfleet.testing import encode_infer_request

ROWS = digits_split()[1][:16]
APP = {"application": "rayfleet"}


@pytest.fixture(scope="module")
def client(grpc_url: str) -> Iterator[triton_grpc.InferenceServerClient]:
    with triton_grpc.InferenceServerClient(grpc_url) as grpc_client:
        yield grpc_client


@pytest.fixture(scope="module")
def stub(grpc_url: str) -> Iterator[Any]:
    """The raw v2 stub, for requests tritonclient would refuse to build."""
    with grpc.insecure_channel(grpc_url) as channel:
        yield service_pb2_grpc.GRPCInferenceServiceStub(channel)


def grpc_infer(
    client: triton_grpc.InferenceServerClient,
    rows: np.ndarray,
    version: str = "",
    **kwargs: Any,
) -> triton_grpc.InferResult:
    infer_input = triton_grpc.InferInput("input", list(rows.shape), "FP32")
    infer_input.set_data_from_numpy(rows)
    return client.infer(
        "digits", [infer_input], model_version=version, headers=APP, **kwargs
    )


def http_infer(serve_url: str, rows: np.ndarray, version: str) -> dict[str, Any]:
    http = triton_http.InferenceServerClient(serve_url.removeprefix("http://"))
    infer_input = triton_http.InferInput("input", list(rows.shape), "FP32")
    infer_input.set_data_from_numpy(rows, binary_data=True)
    outputs = [
        triton_http.InferRequestedOutput(name, binary_data=True)
        for name in ("label", "probabilities")
    ]
    result = http.infer("digits", [infer_input], model_version=version, outputs=outputs)
    return {
        "label": result.as_numpy("label"),
        "probabilities": result.as_numpy("probabilities"),
        "version": result.get_response()["model_version"],
    }


def test_health_and_metadata(client: triton_grpc.InferenceServerClient) -> None:
    assert client.is_server_live(headers=APP)
    assert client.is_server_ready(headers=APP)
    assert client.is_model_ready("digits", headers=APP)
    assert client.is_model_ready("digits", "v3", headers=APP)
    server = client.get_server_metadata(headers=APP)
    assert server.name == "rayfleet"
    metadata = client.get_model_metadata("digits", headers=APP)
    assert set(metadata.versions) == {"v1", "v2", "v3"}
    assert [(i.name, i.datatype, list(i.shape)) for i in metadata.inputs] == [
        ("input", "FP32", [-1, 64])
    ]
    assert {o.name for o in metadata.outputs} == {"label", "probabilities"}
    pinned = client.get_model_metadata("digits", "v2", headers=APP)
    assert list(pinned.versions) == ["v2"]


@pytest.mark.parametrize("version", ["", "v1", "v2", "v3"])
def test_infer_matches_http(
    client: triton_grpc.InferenceServerClient, serve_url: str, version: str
) -> None:
    result = grpc_infer(client, ROWS, version)
    answered = result.get_response().model_version
    if version:
        assert answered == version
    # The same version over HTTP gives the same outputs, bit for bit.
    expected = http_infer(serve_url, ROWS, answered)
    assert expected["version"] == answered
    np.testing.assert_array_equal(result.as_numpy("label"), expected["label"])
    np.testing.assert_array_equal(
        result.as_numpy("probabilities"), expected["probabilities"]
    )


def test_requested_outputs(client: triton_grpc.InferenceServerClient) -> None:
    result = grpc_infer(
        client, ROWS, "v1", outputs=[triton_grpc.InferRequestedOutput("label")]
    )
    assert [o.name for o in result.get_response().outputs] == ["label"]
    assert result.as_numpy("probabilities") is None


@pytest.mark.parametrize("where", ["parameter", "metadata"])
def test_sticky_key_meets_one_version(
    client: triton_grpc.InferenceServerClient, where: str
) -> None:
    seen: dict[str, set[str]] = {}
    for session in ("alpha", "beta", "gamma", "delta"):
        for _ in range(6):
            if where == "parameter":
                result = grpc_infer(
                    client, ROWS[:1], parameters={"x-session-id": session}
                )
            else:
                infer_input = triton_grpc.InferInput("input", [1, 64], "FP32")
                infer_input.set_data_from_numpy(ROWS[:1])
                result = client.infer(
                    "digits",
                    [infer_input],
                    headers={**APP, "x-session-id": session},
                )
            seen.setdefault(session, set()).add(result.get_response().model_version)
    assert all(len(versions) == 1 for versions in seen.values()), seen


def _raw_length_mismatch() -> Any:
    request = encode_infer_request("digits", {"input": ROWS[:1]})
    request.raw_input_contents[0] = request.raw_input_contents[0][:-4]
    return request


BAD_CALLS: list[tuple[str, Any, grpc.StatusCode]] = [
    (
        "unknown input name",
        encode_infer_request("digits", {"pixels": ROWS[:1]}),
        grpc.StatusCode.INVALID_ARGUMENT,
    ),
    (
        "wrong datatype",
        encode_infer_request("digits", {"input": ROWS[:1].astype(np.float64)}),
        grpc.StatusCode.INVALID_ARGUMENT,
    ),
    (
        "wrong shape",
        encode_infer_request("digits", {"input": ROWS[:1, :32]}),
        grpc.StatusCode.INVALID_ARGUMENT,
    ),
    ("raw length mismatch", _raw_length_mismatch(), grpc.StatusCode.INVALID_ARGUMENT),
    (
        "unknown model",
        encode_infer_request("nope", {"input": ROWS[:1]}),
        grpc.StatusCode.NOT_FOUND,
    ),
    (
        "unknown version",
        encode_infer_request("digits", {"input": ROWS[:1]}, version="v9"),
        grpc.StatusCode.NOT_FOUND,
    ),
    (
        "over max_body_bytes",
        encode_infer_request("digits", {"input": np.zeros((5000, 64), np.float32)}),
        grpc.StatusCode.RESOURCE_EXHAUSTED,
    ),
    (
        "the model raises",
        encode_infer_request("double", {"x": np.array([[-1, 1]], np.float32)}),
        grpc.StatusCode.INTERNAL,
    ),
]


@pytest.mark.parametrize(
    ("request_message", "code"),
    [case[1:] for case in BAD_CALLS],
    ids=[case[0] for case in BAD_CALLS],
)
def test_bad_calls_get_their_status_and_serving_goes_on(
    stub: Any,
    client: triton_grpc.InferenceServerClient,
    request_message: Any,
    code: grpc.StatusCode,
) -> None:
    with pytest.raises(grpc.RpcError) as raised:
        stub.ModelInfer(request_message, metadata=tuple(APP.items()), timeout=30)
    assert raised.value.code() == code
    assert raised.value.details()
    # The router keeps serving.
    assert grpc_infer(client, ROWS[:2], "v1").as_numpy("label").shape == (2,)


def test_unanswered_rpcs_are_unimplemented(stub: Any) -> None:
    with pytest.raises(grpc.RpcError) as raised:
        stub.ModelConfig(
            service_pb2.ModelConfigRequest(name="digits"),
            metadata=tuple(APP.items()),
            timeout=30,
        )
    assert raised.value.code() == grpc.StatusCode.UNIMPLEMENTED


def test_tritonclient_sees_the_status(
    client: triton_grpc.InferenceServerClient,
) -> None:
    with pytest.raises(InferenceServerException) as raised:
        grpc_infer(client, ROWS[:1], "v9")
    assert raised.value.status() == "StatusCode.NOT_FOUND"


def test_http_still_answers_beside_grpc(serve_url: str) -> None:
    assert httpx.get(f"{serve_url}/v2/health/live").status_code == 200


def _listeners() -> dict[int, psutil.Process]:
    """The TCP ports this test session's Ray processes listen on, and who."""
    found = {}
    for process in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.Error):
            for connection in process.net_connections("tcp"):
                if connection.status == psutil.CONN_LISTEN:
                    found[connection.laddr.port] = process
    return found


def test_haproxy_holds_the_grpc_port_and_the_router_its_own(grpc_port: int) -> None:
    listeners = _listeners()
    assert listeners[grpc_port].name() == "haproxy"
    # Direct ingress: each router replica serves gRPC itself, on a port from
    # 40000 up (RAY_SERVE_DIRECT_INGRESS_MIN_GRPC_PORT); HAProxy forwards there.
    router_ports = [
        port
        for port, process in listeners.items()
        if 40000 <= port < 41000
        and "ServeReplica:rayfleet:Router" in " ".join(process.cmdline())
    ]
    assert any(_answers_v2(port) for port in router_ports), router_ports


def _answers_v2(port: int) -> bool:
    with triton_grpc.InferenceServerClient(f"127.0.0.1:{port}") as direct:
        try:
            return bool(direct.is_server_live(client_timeout=5))
        except InferenceServerException:
            return False  # Ray's own gRPC server for handle calls


def test_messages_pickle_once_the_alias_is_registered() -> None:
    # Serve's proxy and the router replicas import grpc_ingress, as this module
    # does; the default proxy then pickles each request for a replica.
    assert sys.modules["grpc_service_pb2"] is grpc_ingress.service_pb2
    request = encode_infer_request("digits", {"input": ROWS[:2]}, version="v1")
    assert pickle.loads(pickle.dumps(request)) == request
