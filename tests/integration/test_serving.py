"""The serving core through its public surface: real HTTP, real tritonclient."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import httpx
import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.http as triton_http
from ray import serve

from rayfleet.cli.demo import digits_split
from rayfleet.deployments.app import build
from rayfleet.platform.protocol import ARROW_CONTENT_TYPE
from rayfleet.testing import decode_arrow_response, encode_arrow_request

from .conftest import delete_app, digits_body

ROWS = digits_split()[1][:16]


def direct(store: Path, version: str, rows: np.ndarray) -> dict[str, np.ndarray]:
    """What onnxruntime itself answers for the stored version."""
    session = ort.InferenceSession(str(store / "digits" / version / "model.onnx"))
    label, probabilities = session.run(["label", "probabilities"], {"input": rows})
    return {"label": label, "probabilities": probabilities}


def triton(serve_url: str) -> triton_http.InferenceServerClient:
    return triton_http.InferenceServerClient(serve_url.removeprefix("http://"))


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
@pytest.mark.parametrize("version", ["v1", "v2", "v3"])
def test_tritonclient_matches_onnxruntime(
    serve_url: str, store: Path, binary: bool, version: str
) -> None:
    client = triton(serve_url)
    infer_input = triton_http.InferInput("input", list(ROWS.shape), "FP32")
    infer_input.set_data_from_numpy(ROWS, binary_data=binary)
    outputs = [
        triton_http.InferRequestedOutput(name, binary_data=binary)
        for name in ("label", "probabilities")
    ]
    result = client.infer(
        "digits", [infer_input], model_version=version, outputs=outputs
    )
    expected = direct(store, version, ROWS)
    np.testing.assert_array_equal(result.as_numpy("label"), expected["label"])
    np.testing.assert_allclose(
        result.as_numpy("probabilities"), expected["probabilities"], rtol=1e-6
    )
    assert result.get_response()["model_version"] == version


def test_server_and_model_metadata(serve_url: str) -> None:
    client = triton(serve_url)
    assert client.is_server_live()
    assert client.is_server_ready()
    assert client.is_model_ready("digits")
    assert client.is_model_ready("digits", "v3")
    metadata = client.get_model_metadata("digits")
    assert set(metadata["versions"]) == {"v1", "v2", "v3"}
    assert metadata["inputs"] == [
        {"name": "input", "datatype": "FP32", "shape": [-1, 64]}
    ]
    assert {o["name"] for o in metadata["outputs"]} == {"label", "probabilities"}


def test_v1_predict(http: httpx.Client, store: Path) -> None:
    rows = ROWS[:3]
    response = http.post(
        "/v1/models/digits:predict",
        json={"instances": rows.tolist()},
        headers={"x-model-version": "v2"},
    )
    assert response.status_code == 200, response.text
    assert response.headers["x-model-version"] == "v2"
    predictions = response.json()["predictions"]
    expected = direct(store, "v2", rows)
    assert [p["label"] for p in predictions] == expected["label"].tolist()


def test_arrow_in_arrow_out(http: httpx.Client, store: Path) -> None:
    response = http.post(
        "/v2/models/digits/versions/v1/infer",
        content=encode_arrow_request({"input": ROWS}),
        headers={"content-type": ARROW_CONTENT_TYPE},
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith(ARROW_CONTENT_TYPE)
    outputs = decode_arrow_response(response.content)
    np.testing.assert_array_equal(outputs["label"], direct(store, "v1", ROWS)["label"])


def test_every_response_names_its_version(http: httpx.Client) -> None:
    body = digits_body(ROWS[:1])
    seen = set()
    for _ in range(40):
        response = http.post("/v2/models/digits/infer", json=body)
        assert response.status_code == 200
        version = response.headers["x-model-version"]
        assert response.json()["model_version"] == version
        seen.add(version)
    # v3 sits at weight 0: only a pin reaches it.
    assert seen <= {"v1", "v2"}
    pinned = http.post(
        "/v2/models/digits/infer", json=body, headers={"x-model-version": "v3"}
    )
    assert pinned.headers["x-model-version"] == "v3"


def _v2(
    data: object, shape: object = (1, 64), datatype: str = "FP32", name: str = "input"
) -> bytes:
    return json.dumps(
        {
            "inputs": [
                {
                    "name": name,
                    "shape": list(shape),  # type: ignore[call-overload]
                    "datatype": datatype,
                    "data": data,
                }
            ]
        }
    ).encode()


GOOD_ROW = [0.0] * 64
BAD_INPUT = [
    ("malformed json", "/v2/models/digits/infer", b"{not json", {}, 400),
    ("no inputs", "/v2/models/digits/infer", b'{"outputs": []}', {}, 400),
    (
        "unknown input name",
        "/v2/models/digits/infer",
        _v2(GOOD_ROW, name="pixels"),
        {},
        400,
    ),
    (
        "missing input",
        "/v2/models/double/infer",
        b'{"inputs": [{"name": "z", "shape": [1, 2], "datatype": "FP32", '
        b'"data": [1, 2]}]}',
        {},
        400,
    ),
    (
        "extra input",
        "/v2/models/digits/infer",
        json.dumps(
            {
                "inputs": [
                    {
                        "name": "input",
                        "shape": [1, 64],
                        "datatype": "FP32",
                        "data": GOOD_ROW,
                    },
                    {"name": "extra", "shape": [1], "datatype": "FP32", "data": [1]},
                ]
            }
        ).encode(),
        {},
        400,
    ),
    (
        "wrong datatype",
        "/v2/models/digits/infer",
        _v2([0] * 64, datatype="INT32"),
        {},
        400,
    ),
    ("shape does not match data", "/v2/models/digits/infer", _v2([0.0] * 10), {}, 400),
    (
        "wrong shape for model",
        "/v2/models/digits/infer",
        _v2([0.0] * 32, shape=(1, 32)),
        {},
        400,
    ),
    (
        "binary length mismatch",
        "/v2/models/digits/infer",
        b'{"inputs":[{"name":"input","shape":[1,64],"datatype":"FP32",'
        b'"parameters":{"binary_data_size":256}}]}' + b"\0" * 100,
        {"inference-header-content-length": "94"},
        400,
    ),
    ("unknown model", "/v2/models/nope/infer", _v2(GOOD_ROW), {}, 404),
    ("unknown version", "/v2/models/digits/versions/v9/infer", _v2(GOOD_ROW), {}, 404),
    (
        "unknown version header",
        "/v2/models/digits/infer",
        _v2(GOOD_ROW),
        {"x-model-version": "v9"},
        404,
    ),
    (
        "v1 ragged instances",
        "/v1/models/digits:predict",
        b'{"instances": [[1, 2], [3]]}',
        {},
        400,
    ),
    ("body over the limit", "/v2/models/digits/infer", b"x" * (2 << 20), {}, 413),
    # The hostile inputs of issue 15, each once over real Serve.
    (
        "NUL in a path version",
        "/v2/models/digits/versions/v1%00/infer",
        _v2(GOOD_ROW),
        {},
        404,
    ),
    (
        "CR LF in a path version",
        "/v2/models/digits/versions/v1%0d%0aX-Evil:%201/infer",
        _v2(GOOD_ROW),
        {},
        404,
    ),
    ("65 dimensions", "/v2/models/digits/infer", _v2([0.0], shape=[1] * 65), {}, 400),
    (
        "zero-size shape that overflows int64",
        "/v2/models/digits/infer",
        _v2([], shape=(0, 2**63 - 1)),
        {},
        400,
    ),
    (
        "header length of 5000 nines",
        "/v2/models/digits/infer",
        _v2(GOOD_ROW),
        {"inference-header-content-length": "9" * 5000},
        400,
    ),
]


@pytest.mark.parametrize(
    ("path", "body", "headers", "status"),
    [case[1:] for case in BAD_INPUT],
    ids=[case[0] for case in BAD_INPUT],
)
def test_bad_input_gets_a_json_4xx(
    http: httpx.Client, path: str, body: bytes, headers: dict[str, str], status: int
) -> None:
    response = http.post(path, content=body, headers=headers)
    assert response.status_code == status, response.text
    assert isinstance(response.json()["error"], str) and response.json()["error"]
    # Only a version that exists may be named back, never what the client sent.
    assert response.headers.get("x-model-version") in (None, "v1", "v2", "v3")


@pytest.mark.parametrize("pin", ["v1", "v2"], ids=["in the router", "in a replica"])
def test_zero_rows_get_zero_row_outputs(http: httpx.Client, pin: str) -> None:
    response = http.post(
        f"/v2/models/digits/versions/{pin}/infer", content=_v2([], shape=(0, 64))
    )
    assert response.status_code == 200, response.text
    outputs = {out["name"]: out for out in response.json()["outputs"]}
    assert outputs["label"]["shape"] == [0] and outputs["label"]["data"] == []
    assert outputs["probabilities"]["shape"] == [0, 10]


def test_good_request_after_the_bad_input_table(http: httpx.Client) -> None:
    for _, path, body, headers, _ in BAD_INPUT:
        http.post(path, content=body, headers=headers)
    response = http.post("/v2/models/digits/infer", content=_v2(GOOD_ROW))
    assert response.status_code == 200


def _double(x: float, rows: int = 1) -> dict[str, object]:
    return {
        "inputs": [
            {"name": "x", "shape": [rows, 2], "datatype": "FP32", "data": [x, x] * rows}
        ]
    }


def test_model_error_is_a_500_and_the_replica_keeps_serving(http: httpx.Client) -> None:
    response = http.post("/v2/models/double/infer", json=_double(-1))
    assert response.status_code == 500
    assert "negative input" in response.json()["error"]
    ok = http.post("/v2/models/double/infer", json=_double(3))
    assert ok.status_code == 200
    assert ok.json()["outputs"][0]["data"] == [6, 6]


async def _burst(url: str, bodies: list[dict[str, object]]) -> list[httpx.Response]:
    async with httpx.AsyncClient(base_url=url, timeout=60) as client:
        return list(
            await asyncio.gather(
                *(client.post("/v2/models/double/infer", json=b) for b in bodies)
            )
        )


def test_a_failing_request_does_not_fail_its_batch(serve_url: str) -> None:
    # Six fit the version's queue (4 in flight, 4 waiting); batches of up to 4.
    bodies = [_double(-1 if i == 3 else i) for i in range(6)]
    responses = asyncio.run(_burst(serve_url, bodies))
    codes = [r.status_code for r in responses]
    assert codes == [200, 200, 200, 500, 200, 200]


def test_deadline_is_a_504(http: httpx.Client) -> None:
    response = http.post("/v2/models/sleepy/infer", json=_double(7000))
    assert response.status_code == 504
    assert "5 s" in response.json()["error"]


def test_full_queue_is_a_503_with_retry_after(serve_url: str) -> None:
    # 4 in flight and 4 queued fit; the rest are turned away at once.
    responses = asyncio.run(_burst(serve_url, [_double(1800) for _ in range(24)]))
    refused = [r for r in responses if r.status_code == 503]
    assert refused, [r.status_code for r in responses]
    assert all(r.headers["retry-after"] == "1" for r in refused)
    assert {r.status_code for r in responses} <= {200, 503}


def test_batching_batches_under_concurrent_load(serve_url: str) -> None:
    body = digits_body(ROWS[:1])

    async def load() -> list[int]:
        async with httpx.AsyncClient(base_url=serve_url, timeout=60) as client:
            responses = await asyncio.gather(
                *(
                    client.post("/v2/models/digits/versions/v2/infer", json=body)
                    for _ in range(64)
                )
            )
        return [r.status_code for r in responses]

    assert set(asyncio.run(load())) == {200}
    handle = serve.get_deployment_handle("digits:v2", app_name="rayfleet")
    stats = handle.stats.remote().result()
    assert max(stats["batch_sizes"]) > 1, stats


def test_router_placed_version_has_no_deployment_of_its_own(http: httpx.Client) -> None:
    deployments = serve.status().applications["rayfleet"].deployments
    assert "digits:v1" not in deployments
    assert {"digits:v2", "digits:v3", "Router"} <= set(deployments)
    pinned = http.post(
        "/v2/models/digits/versions/v1/infer",
        json={
            "inputs": [
                {
                    "name": "input",
                    "shape": [1, 64],
                    "datatype": "FP32",
                    "data": ROWS[0].tolist(),
                }
            ]
        },
    )
    assert pinned.status_code == 200
    assert pinned.headers["x-model-version"] == "v1"


def test_replica_is_not_ready_before_warm_up(serve_url: str, store: Path) -> None:
    args = {
        "store": str(store),
        "router": {"num_cpus": 0.1},
        "models": [
            {"name": "slowstart", "versions": [{"name": "v1", "num_cpus": 0.1}]}
        ],
    }
    target = serve.RunTarget(target=build(args), name="slow", route_prefix="/slow")
    serve.run_many([target], wait_for_applications_running=False)
    try:
        states = []
        deadline = time.monotonic() + 60
        with httpx.Client(base_url=serve_url + "/slow", timeout=10) as client:
            while time.monotonic() < deadline:
                response = client.get("/v2/models/slowstart/ready")
                if response.status_code in (200, 503):
                    states.append(response.status_code)
                if states and states[-1] == 200:
                    break
                time.sleep(0.2)
            assert states[-1] == 200 and 503 in states, states
            ok = client.post("/v2/models/slowstart/infer", json=_double(1))
            assert ok.status_code == 200
        stats = (
            serve.get_deployment_handle("slowstart:v1", app_name="slow")
            .stats.remote()
            .result()
        )
        assert stats["warm_s"] >= 4
    finally:
        delete_app("slow")
