"""The image CNN over every wire format: JSON, binary tensors, Arrow, gRPC.

The shared app caps bodies at 1 MiB, so one image travels, with pixel values of
short decimals (0, 0.25, ..., 1) to keep its JSON under the cap.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.grpc as triton_grpc
import tritonclient.http as triton_http

from rayfleet.cli.demo import image_batch
from rayfleet.platform.protocol import ARROW_CONTENT_TYPE
from rayfleet.testing import decode_arrow_response, encode_arrow_request

IMAGE = np.round(image_batch(1, seed=3) * 4) / 4
OUTPUTS = ("probabilities", "label")


def over_http(serve_url: str, binary: bool) -> dict[str, np.ndarray]:
    client = triton_http.InferenceServerClient(serve_url.removeprefix("http://"))
    image = triton_http.InferInput("image", list(IMAGE.shape), "FP32")
    image.set_data_from_numpy(IMAGE, binary_data=binary)
    result = client.infer(
        "image",
        [image],
        outputs=[
            triton_http.InferRequestedOutput(name, binary_data=binary)
            for name in OUTPUTS
        ],
    )
    assert result.get_response()["model_version"] == "v1"
    return {name: result.as_numpy(name) for name in OUTPUTS}


def over_arrow(serve_url: str) -> dict[str, np.ndarray]:
    response = httpx.post(
        f"{serve_url}/v2/models/image/infer",
        content=encode_arrow_request({"image": IMAGE}),
        headers={"content-type": ARROW_CONTENT_TYPE},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    assert response.headers["x-model-version"] == "v1"
    return decode_arrow_response(response.content)


def over_grpc(grpc_url: str) -> dict[str, np.ndarray]:
    with triton_grpc.InferenceServerClient(grpc_url) as client:
        image = triton_grpc.InferInput("image", list(IMAGE.shape), "FP32")
        image.set_data_from_numpy(IMAGE)
        result = client.infer("image", [image], headers={"application": "rayfleet"})
    assert result.get_response().model_version == "v1"
    return {name: result.as_numpy(name) for name in OUTPUTS}


@pytest.fixture(scope="module")
def expected(store: Path) -> dict[str, np.ndarray]:
    session = ort.InferenceSession(str(store / "image" / "v1" / "model.onnx"))
    probabilities, label = session.run(list(OUTPUTS), {"image": IMAGE})
    return {"probabilities": probabilities, "label": label}


def test_image_json_under_the_body_cap() -> None:
    image = triton_http.InferInput("image", list(IMAGE.shape), "FP32")
    image.set_data_from_numpy(IMAGE, binary_data=False)
    body, _ = triton_http.InferenceServerClient.generate_request_body([image])
    assert len(body) < 1 << 20


def test_every_wire_format_gives_the_same_outputs(
    serve_url: str, grpc_url: str, expected: dict[str, np.ndarray]
) -> None:
    answers = {
        "json": over_http(serve_url, binary=False),
        "binary": over_http(serve_url, binary=True),
        "arrow": over_arrow(serve_url),
        "grpc": over_grpc(grpc_url),
    }
    for wire, outputs in answers.items():
        assert outputs["label"].dtype == np.int64, wire
        assert outputs["probabilities"].shape == (1, 10), wire
        np.testing.assert_array_equal(outputs["label"], answers["binary"]["label"])
        np.testing.assert_array_equal(
            outputs["probabilities"], answers["binary"]["probabilities"], err_msg=wire
        )
    np.testing.assert_array_equal(answers["grpc"]["label"], expected["label"])
    np.testing.assert_allclose(
        answers["grpc"]["probabilities"], expected["probabilities"], rtol=1e-5
    )


def test_image_metadata(http: httpx.Client) -> None:
    metadata = http.get("/v2/models/image").json()
    assert metadata["inputs"] == [
        {"name": "image", "datatype": "FP32", "shape": [-1, 3, 224, 224]}
    ]
    assert {o["name"]: o["datatype"] for o in metadata["outputs"]} == {
        "probabilities": "FP32",
        "label": "INT64",
    }
