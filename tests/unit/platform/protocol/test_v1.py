from __future__ import annotations

import json
from typing import Any

import ml_dtypes
import numpy as np
import pytest

from rayfleet.platform.errors import InvalidInput, ModelError
from rayfleet.platform.protocol import (
    InferResponse,
    decode_v1_request,
    encode_v1_response,
)


def body(document: Any) -> bytes:
    return json.dumps(document).encode()


def test_single_input_rows() -> None:
    request = decode_v1_request(
        body({"instances": [[1, 2, 3], [4, 5, 6]]}), ["x"], ["FP32"]
    )
    assert request.datatypes == {"x": "FP32"}
    x = request.inputs["x"]
    assert x.dtype == np.float32 and x.shape == (2, 3)
    assert x.tolist() == [[1, 2, 3], [4, 5, 6]]
    assert request.outputs == [] and request.binary_default is False


def test_single_input_scalar_rows() -> None:
    request = decode_v1_request(body({"instances": [1, 2, 3]}), ["x"], ["INT64"])
    assert request.inputs["x"].tolist() == [1, 2, 3]
    assert request.inputs["x"].shape == (3,)


def test_single_input_named_rows() -> None:
    document = {"instances": [{"x": [1.5, 2.5]}, {"x": [3.5, 4.5]}]}
    request = decode_v1_request(body(document), ["x"], ["FP64"])
    assert request.inputs["x"].tolist() == [[1.5, 2.5], [3.5, 4.5]]


def test_several_inputs_rows() -> None:
    document = {
        "instances": [
            {"image": [[0, 1], [2, 3]], "label": "cat", "flag": True},
            {"image": [[4, 5], [6, 7]], "label": "dog", "flag": False},
        ]
    }
    request = decode_v1_request(
        body(document), ["image", "label", "flag"], ["UINT8", "BYTES", "BOOL"]
    )
    assert list(request.inputs) == ["image", "label", "flag"]
    assert request.inputs["image"].shape == (2, 2, 2)
    assert request.inputs["image"].dtype == np.uint8
    assert request.inputs["label"].tolist() == [b"cat", b"dog"]
    assert request.inputs["flag"].tolist() == [True, False]


def test_columnar_single_input() -> None:
    request = decode_v1_request(body({"inputs": [[1, 2], [3, 4]]}), ["x"], ["INT8"])
    assert request.inputs["x"].tolist() == [[1, 2], [3, 4]]
    assert request.inputs["x"].dtype == np.int8


def test_columnar_named_inputs() -> None:
    document = {"inputs": {"a": [1, 2, 3], "b": [[1.0], [2.0]]}}
    request = decode_v1_request(body(document), ["a", "b"], ["INT32", "BF16"])
    assert request.inputs["a"].shape == (3,)
    assert request.inputs["b"].dtype == ml_dtypes.bfloat16
    assert request.inputs["b"].shape == (2, 1)


def test_b64_bytes() -> None:
    document = {"instances": [{"b64": "AP8="}, "text"]}
    request = decode_v1_request(body(document), ["blob"], ["BYTES"])
    assert request.inputs["blob"].tolist() == [b"\x00\xff", b"text"]


def test_signature_mismatch_is_a_caller_bug() -> None:
    with pytest.raises(ValueError, match="equal length"):
        decode_v1_request(body({"instances": [1]}), ["x", "y"], ["FP32"])


@pytest.mark.parametrize(
    ("raw", "names", "message"),
    [
        (b"{nope", ["x"], "not valid JSON"),
        (body([1, 2]), ["x"], "must be a JSON object"),
        (body({}), ["x"], "exactly one of 'instances'"),
        (body({"instances": [1], "inputs": [1]}), ["x"], "exactly one of 'instances'"),
        (body({"instances": {"x": 1}}), ["x"], "'instances' must be a list"),
        (body({"instances": []}), ["x"], "'instances' is empty"),
        (
            body({"instances": [[1, 2], [3]]}),
            ["x"],
            "input 'x': data is not a rectangular",
        ),
        (
            body({"instances": [[1, 2], 3]}),
            ["x"],
            "input 'x': data is not a rectangular",
        ),
        (
            body({"instances": [{"y": 1}]}),
            ["x"],
            "instances[0] is missing input(s) ['x']",
        ),
        (
            body({"instances": [{"x": 1, "z": 2}]}),
            ["x"],
            "instances[0] has unknown input(s) ['z']",
        ),
        (
            body({"instances": [{"x": 1}, 2]}),
            ["x"],
            "instances[1] must be an object mapping the inputs ['x']",
        ),
        (
            body({"instances": [[1, 2]]}),
            ["x", "y"],
            "instances[0] must be an object mapping the inputs ['x', 'y']",
        ),
        (
            body({"instances": [{"x": 1}]}),
            ["x", "y"],
            "instances[0] is missing input(s) ['y']",
        ),
        (
            body({"inputs": [1, 2]}),
            ["x", "y"],
            "'inputs' must be an object mapping the inputs ['x', 'y']",
        ),
        (
            body({"inputs": {"x": [1], "q": [2]}}),
            ["x"],
            "'inputs' has unknown input(s)",
        ),
        (body({"instances": [300]}), ["x"], "input 'x': value 300 does not fit UINT8"),
        (body({"instances": ["a"]}), ["x"], "input 'x': UINT8 data must be integers"),
        (
            body({"instances": [[None]]}),
            ["x"],
            "input 'x': UINT8 data must be integers",
        ),
    ],
)
def test_bad_requests(raw: bytes, names: list[str], message: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        decode_v1_request(raw, names, ["UINT8"] * len(names))
    assert message in caught.value.message


def test_single_output_predictions_are_rows() -> None:
    arr = np.array([[0.5, 1.5], [2.5, 3.5]], dtype=np.float32)
    encoded = encode_v1_response(InferResponse("m", "1", {"y": arr}))
    assert json.loads(encoded) == {"predictions": [[0.5, 1.5], [2.5, 3.5]]}


def test_several_outputs_predictions_are_row_objects() -> None:
    outputs = {
        "label": np.array([b"cat", b"\xff"], dtype=object),
        "score": np.array([0.75, 0.25], dtype=ml_dtypes.bfloat16),
        "top": np.array([[1, 2], [3, 4]], dtype=np.int64),
    }
    encoded = encode_v1_response(InferResponse("m", "1", outputs))
    assert json.loads(encoded) == {
        "predictions": [
            {"label": "cat", "score": 0.75, "top": [1, 2]},
            {"label": {"b64": "/w=="}, "score": 0.25, "top": [3, 4]},
        ]
    }


def test_v1_round_trip_through_b64() -> None:
    raw = np.array([b"\x00\x01", b"plain"], dtype=object)
    encoded = encode_v1_response(InferResponse("m", "1", {"y": raw}))
    document = {"instances": json.loads(encoded)["predictions"]}
    request = decode_v1_request(body(document), ["y"], ["BYTES"])
    assert request.inputs["y"].tolist() == raw.tolist()


@pytest.mark.parametrize(
    ("outputs", "message"),
    [
        ({}, "returned no outputs"),
        ({"s": np.array(1.0)}, "output 's' is a scalar"),
        (
            {"a": np.zeros(2), "b": np.zeros(3)},
            "outputs have different batch sizes",
        ),
        ({"c": np.zeros(2, np.complex64)}, "output 'c': numpy dtype complex64"),
    ],
)
def test_unencodable_outputs(outputs: dict[str, np.ndarray], message: str) -> None:
    with pytest.raises(ModelError, match=message):
        encode_v1_response(InferResponse("m", "1", outputs))
