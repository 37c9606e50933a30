"""The router's HTTP app over runtimes in this process: routes, codecs, errors,
observations and shadows, without Ray."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from urllib.parse import quote

import httpx
import numpy as np
import pytest
import tritonclient.http as triton_http
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient

from rayfleet.cli.demo import build_demo_store, digits_split
from rayfleet.platform.config.spec import parse_spec
from rayfleet.platform.config.store import ModelStore
from rayfleet.platform.ingress.http import build_http_app
from rayfleet.platform.ingress.request_id import safe_request_id
from rayfleet.platform.protocol import ARROW_CONTENT_TYPE
from rayfleet.platform.runtimes import Runtime
from rayfleet.platform.serving.buffer import ObservationBuffer
from rayfleet.platform.serving.inprocess import InProcessBackend, load_runners
from rayfleet.platform.serving.service import InferenceService
from rayfleet.platform.serving.traffic import TrafficPlan
from rayfleet.platform.validation.observation import Observation
from rayfleet.testing import decode_arrow_response, encode_arrow_request

ROWS = digits_split()[1][:4]


class Broken:
    """A runtime whose model code always raises."""

    def predict(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        raise RuntimeError("weights are corrupt")


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("store")
    build_demo_store(str(root))
    return root


@pytest.fixture
def app(
    store: Path,
) -> Iterator[tuple[TestClient, InferenceService, ObservationBuffer]]:
    spec = parse_spec(
        {
            "store": str(store),
            "router": {"max_body_bytes": 4096},
            "observations": {"sample_rate": 1.0},
            "models": [
                {
                    "name": "digits",
                    "versions": [
                        {"name": "v1"},
                        {"name": "v2", "canary": True, "weight": 0},
                        {"name": "v3", "canary": True, "weight": 0},
                    ],
                }
            ],
        }
    )
    model_store = ModelStore(spec.store)
    manifests = {
        "digits": {v: model_store.manifest("digits", v) for v in ("v1", "v2", "v3")}
    }
    runners = load_runners(spec, manifests, placement=None)
    runners["digits"]["v3"].runtime = Broken()
    buffer = ObservationBuffer(100)
    service = InferenceService(
        spec, manifests, InProcessBackend(runners), recorder=buffer
    )
    with TestClient(build_http_app(service)) as client:
        yield client, service, buffer


def v2_body(rows: np.ndarray) -> dict[str, object]:
    return {
        "inputs": [
            {
                "name": "input",
                "shape": list(rows.shape),
                "datatype": "FP32",
                "data": rows.flatten().tolist(),
            }
        ]
    }


def test_json_binary_and_arrow_agree(app: tuple) -> None:
    client, _, _ = app
    as_json = client.post("/v2/models/digits/infer", json=v2_body(ROWS))
    assert as_json.status_code == 200
    labels = as_json.json()["outputs"][0]["data"]

    infer_input = triton_http.InferInput("input", list(ROWS.shape), "FP32")
    infer_input.set_data_from_numpy(ROWS, binary_data=True)
    outputs = [triton_http.InferRequestedOutput("label", binary_data=True)]
    body, length = triton_http.InferenceServerClient.generate_request_body(
        [infer_input], outputs=outputs
    )
    binary = client.post(
        "/v2/models/digits/infer",
        content=body,
        headers={"inference-header-content-length": str(length)},
    )
    result = triton_http.InferResult.from_response_body(
        binary.content,
        header_length=int(binary.headers["inference-header-content-length"]),
    )
    assert result.as_numpy("label").tolist() == labels

    arrow = client.post(
        "/v2/models/digits/infer",
        content=encode_arrow_request({"input": ROWS}),
        headers={"content-type": ARROW_CONTENT_TYPE},
    )
    assert decode_arrow_response(arrow.content)["label"].tolist() == labels
    assert {as_json.headers["x-model-version"], arrow.headers["x-model-version"]} == {
        "v1"
    }


def test_every_request_is_observed(app: tuple) -> None:
    client, _, buffer = app
    client.post("/v2/models/digits/infer", json=v2_body(ROWS[:1]))
    client.post("/v2/models/digits/versions/v3/infer", json=v2_body(ROWS[:1]))
    client.post("/v2/models/digits/infer", json=v2_body(ROWS[:1, :10]))
    rows = [Observation.from_row(row) for row in buffer.drain(10)]
    assert [(o.version, o.status) for o in rows] == [
        ("v1", 200),
        ("v3", 500),
        ("v1", 400),
    ]
    ok = rows[0]
    assert ok.prediction is not None and ok.features is not None
    assert len(ok.features) == 64 and ok.latency_ms >= ok.model_ms > 0


@pytest.mark.parametrize(
    ("path", "body", "status", "message"),
    [
        ("/v2/models/digits/infer", b"{", 400, "JSON"),
        ("/v2/models/nope/infer", b"{}", 404, "no model 'nope'"),
        ("/v2/models/digits/versions/v9/infer", b"{}", 404, "no version 'v9'"),
        ("/v2/models/digits/infer", b"x" * 5000, 413, "limit"),
        ("/v2/models/digits/versions/v3/infer", None, 500, "weights are corrupt"),
        ("/v2/nowhere", b"", 404, "Not Found"),
    ],
)
def test_errors_are_json(
    app: tuple, path: str, body: bytes | None, status: int, message: str
) -> None:
    client, _, _ = app
    if body is None:
        response = client.post(path, json=v2_body(ROWS[:1]))
    else:
        response = client.post(path, content=body)
    assert response.status_code == status
    assert message in response.json()["error"]


@pytest.mark.parametrize(
    "length",
    [b"9" * 5000, b"\xb2", b"-1", b"1e3", b"1 2", b""],
    ids=["5000 nines", "byte 0xB2", "negative", "float", "space", "empty"],
)
def test_a_malformed_binary_header_length_is_a_400(app: tuple, length: bytes) -> None:
    client, _, _ = app
    response = client.post(
        "/v2/models/digits/infer",
        content=b'{"inputs": []}',
        headers={"inference-header-content-length": length},
    )
    assert response.status_code == 400
    assert "Inference-Header-Content-Length" in response.json()["error"]


def test_a_failing_shadow_never_reaches_the_client(app: tuple) -> None:
    client, service, buffer = app
    buffer.drain(100)
    service.update_plans(
        {
            "digits": TrafficPlan(
                "digits", {"v1": 100.0, "v2": 0.0, "v3": 0.0}, "v3", 100.0
            )
        }
    )
    for _ in range(5):
        response = client.post("/v2/models/digits/infer", json=v2_body(ROWS[:1]))
        assert response.status_code == 200
        assert response.headers["x-model-version"] == "v1"
    assert service.shadow_failures == 5
    rows = [Observation.from_row(row) for row in buffer.drain(100)]
    shadows = [o for o in rows if o.shadow_of is not None]
    assert len(shadows) == 5
    assert all(
        o.version == "v3" and o.shadow_of == "v1" and o.status == 500 for o in shadows
    )
    primaries = {o.request_id for o in rows if o.shadow_of is None}
    assert {o.request_id for o in shadows} == primaries


def test_plans_update_and_unknown_models_are_ignored(app: tuple) -> None:
    client, service, _ = app
    service.update_plans(
        {
            "digits": TrafficPlan("digits", {"v1": 0.0, "v2": 100.0, "v3": 0.0}),
            "ghost": TrafficPlan("ghost", {"x": 100.0}),
        }
    )
    assert "ghost" not in service.plans
    response = client.post("/v2/models/digits/infer", json=v2_body(ROWS[:1]))
    assert response.headers["x-model-version"] == "v2"


class RefusesEmptyBatches:
    """Wraps a runtime the way many fail: an empty batch raises."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.calls = 0

    def predict(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.calls += 1
        if any(len(array) == 0 for array in inputs.values()):
            raise RuntimeError("cannot run an empty batch")
        return self.runtime.predict(inputs)


def test_zero_rows_get_empty_outputs_without_the_model(app: tuple) -> None:
    client, service, buffer = app
    runner = service.backend.runners["digits"]["v1"]
    runtime = runner.runtime = RefusesEmptyBatches(runner.runtime)
    empty = np.zeros((0, 64), dtype=np.float32)

    as_json = client.post("/v2/models/digits/infer", json=v2_body(empty))
    assert as_json.status_code == 200
    assert as_json.headers["x-model-version"] == "v1"
    assert [
        (o["name"], o["datatype"], o["shape"], o["data"])
        for o in as_json.json()["outputs"]
    ] == [("label", "INT64", [0], []), ("probabilities", "FP32", [0, 10], [])]

    arrow = client.post(
        "/v2/models/digits/infer",
        content=encode_arrow_request({"input": empty}),
        headers={"content-type": ARROW_CONTENT_TYPE},
    )
    assert arrow.status_code == 200
    outputs = decode_arrow_response(arrow.content)
    assert outputs["label"].shape == (0,) and outputs["label"].dtype == np.int64
    assert outputs["probabilities"].shape == (0, 10)
    assert outputs["probabilities"].dtype == np.float32

    infer_input = triton_http.InferInput("input", [0, 64], "FP32")
    infer_input.set_data_from_numpy(empty, binary_data=True)
    body, length = triton_http.InferenceServerClient.generate_request_body(
        [infer_input],
        outputs=[triton_http.InferRequestedOutput("probabilities", binary_data=True)],
    )
    binary = client.post(
        "/v2/models/digits/infer",
        content=body,
        headers={"inference-header-content-length": str(length)},
    )
    assert binary.status_code == 200
    result = triton_http.InferResult.from_response_body(
        binary.content,
        header_length=int(binary.headers["inference-header-content-length"]),
    )
    assert result.as_numpy("probabilities").shape == (0, 10)

    assert runtime.calls == 0
    rows = [Observation.from_row(row) for row in buffer.drain(10)]
    assert [(o.version, o.status, o.prediction, o.features) for o in rows] == [
        ("v1", 200, None, None)
    ] * 3
    # The same model still answers a request with rows.
    assert client.post("/v2/models/digits/infer", json=v2_body(ROWS)).status_code == 200
    assert runtime.calls == 1


KNOWN_VERSIONS = {"v1", "v2", "v3"}


def assert_headers_are_ours(response: httpx.Response) -> None:
    """Every header of an answer is one the app sets, with a value of its own."""
    headers = response.headers
    assert set(headers) <= {
        "content-length",
        "content-type",
        "x-model-version",
        "x-request-id",
    }
    assert headers.get("x-model-version", "v1") in KNOWN_VERSIONS
    assert safe_request_id(headers["x-request-id"]) == headers["x-request-id"]
    assert headers["content-type"] == "application/json"
    assert headers["content-length"] == str(len(response.content))


@pytest.mark.parametrize(
    "version",
    ["v1%00", "v1%0d%0aset-cookie:%20x=1", "v%C3%A9", "%E2%82%AC", "v" * 5000],
)
@pytest.mark.parametrize(
    ("method", "route"), [("POST", "/infer"), ("GET", ""), ("GET", "/ready")]
)
def test_an_unknown_version_is_never_echoed_into_a_header(
    app: tuple, version: str, method: str, route: str
) -> None:
    client, _, _ = app
    path = f"/v2/models/digits/versions/{version}{route}"
    response = client.request(method, path, content=b"{}")
    assert response.status_code == 404
    assert "no version" in response.json()["error"]
    assert "x-model-version" not in response.headers
    assert_headers_are_ours(response)


def test_an_unknown_pin_header_is_not_echoed(app: tuple) -> None:
    client, _, _ = app
    response = client.post(
        "/v2/models/digits/infer",
        json=v2_body(ROWS[:1]),
        headers={"x-model-version": "v9"},
    )
    assert response.status_code == 404
    assert "x-model-version" not in response.headers


def test_an_error_on_a_known_version_names_it(app: tuple) -> None:
    client, _, _ = app
    response = client.post("/v2/models/digits/versions/v1/infer", content=b"{")
    assert response.status_code == 400
    assert response.headers["x-model-version"] == "v1"


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    version=st.text(min_size=1, max_size=300),
    method_route=st.sampled_from([("POST", "/infer"), ("GET", ""), ("GET", "/ready")]),
)
def test_any_path_version_gets_a_json_answer_with_our_headers(
    app: tuple, version: str, method_route: tuple[str, str]
) -> None:
    client, _, _ = app
    method, route = method_route
    path = f"/v2/models/digits/versions/{quote(version, safe='')}{route}"
    response = client.request(method, path, content=b"{")
    assert response.status_code < 500
    assert isinstance(response.json()["error"], str) or response.status_code == 200
    assert_headers_are_ours(response)
