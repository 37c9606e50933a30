"""The v2 gRPC codec against tritonclient.grpc's own messages, both directions."""

from __future__ import annotations

import re
import struct
from typing import Any

import grpc
import ml_dtypes
import numpy as np
import pytest
import tritonclient.grpc as triton
from tritonclient.grpc import _utils as triton_utils
from tritonclient.grpc import service_pb2

from rayfleet.platform.errors import (
    Conflict,
    DeadlineExceeded,
    InvalidInput,
    ModelError,
    ModelNotFound,
    PayloadTooLarge,
    RayfleetError,
    ServiceUnavailable,
    Unauthorized,
    UnsupportedMediaType,
    VersionNotFound,
)
from rayfleet.platform.protocol import (
    DATATYPES,
    InferRequest,
    InferResponse,
    RequestedOutput,
    numpy_dtype,
)
from rayfleet.platform.protocol.grpc_codec import (
    decode_infer_request,
    encode_infer_response,
    grpc_status,
    model_metadata_response,
    server_metadata_response,
)
from rayfleet.testing import encode_infer_request

SAMPLES: dict[str, np.ndarray] = {
    "BOOL": np.array([[True, False, True], [False, False, True]]),
    "UINT8": np.array([[0, 7, 255]], dtype=np.uint8),
    "UINT16": np.array([0, 65535], dtype=np.uint16),
    "UINT32": np.array([0, 2**32 - 1], dtype=np.uint32),
    "UINT64": np.array([0, 2**64 - 1], dtype=np.uint64),
    "INT8": np.array([-128, 0, 127], dtype=np.int8),
    "INT16": np.array([-(2**15), 2**15 - 1], dtype=np.int16),
    "INT32": np.array([[-(2**31)], [2**31 - 1]], dtype=np.int32),
    "INT64": np.array([-(2**63), 2**63 - 1], dtype=np.int64),
    "FP16": np.array([0.5, -1.25, 65504.0], dtype=np.float16),
    "FP32": np.linspace(-1, 1, 2 * 3 * 4 * 4, dtype=np.float32).reshape(2, 3, 4, 4),
    "FP64": np.array([0.1, np.nan, -1.7e308, 5e-324]),
    "BF16": np.array([[1.5, -2.0], [3.0e38, 0.0]], dtype=ml_dtypes.bfloat16),
    "BYTES": np.array([[b"abc", b""], ["é".encode(), b"\xff\x00"]], dtype=object),
}


def wire(message: Any) -> Any:
    """``message`` as the server receives it: serialized, then parsed."""
    parsed = type(message).FromString(message.SerializeToString())
    return parsed


def tritonclient_request(
    arrays: dict[str, np.ndarray], version: str = "", **kwargs: Any
) -> bytes:
    """The ModelInferRequest tritonclient.grpc's ``infer`` would send, serialized."""
    inputs = []
    for name, arr in arrays.items():
        tensor = triton.InferInput(name, list(arr.shape), name)
        tensor.set_data_from_numpy(arr)
        inputs.append(tensor)
    outputs = [triton.InferRequestedOutput(name) for name in kwargs.pop("outputs", [])]
    request = triton_utils._get_inference_request(
        model_name="m",
        inputs=inputs,
        model_version=version,
        request_id=kwargs.pop("request_id", ""),
        outputs=outputs or None,
        sequence_id=0,
        sequence_start=False,
        sequence_end=False,
        priority=0,
        timeout=None,
        parameters=kwargs.pop("parameters", None),
    )
    serialized: bytes = request.SerializeToString()
    return serialized


def decode(message: Any) -> InferRequest:
    """The request in ``message``, decoded from its serialized form."""
    return decode_infer_request(message.SerializeToString()).request


def assert_same(actual: np.ndarray, expected: np.ndarray) -> None:
    assert actual.shape == expected.shape
    if expected.dtype == object:
        assert list(actual.reshape(-1)) == list(expected.reshape(-1))
        return
    assert actual.dtype == expected.dtype
    np.testing.assert_array_equal(actual.view(np.uint8), expected.view(np.uint8))


def tensor(name: str, datatype: str, shape: list[int], **contents: Any) -> Any:
    return service_pb2.ModelInferRequest.InferInputTensor(
        name=name,
        datatype=datatype,
        shape=shape,
        contents=service_pb2.InferTensorContents(**contents),
    )


def raw_request(*tensors: Any, raw: list[bytes] | None = None) -> Any:
    return service_pb2.ModelInferRequest(
        model_name="m", inputs=tensors, raw_input_contents=raw or []
    )


# --- requests --------------------------------------------------------------------


@pytest.mark.parametrize("datatype", DATATYPES)
def test_every_datatype_from_tritonclient(datatype: str) -> None:
    arr = SAMPLES[datatype]
    request = decode_infer_request(tritonclient_request({datatype: arr})).request
    assert request.datatypes == {datatype: datatype}
    assert_same(request.inputs[datatype], arr)


@pytest.mark.parametrize("datatype", DATATYPES)
def test_every_datatype_round_trips(datatype: str) -> None:
    arr = SAMPLES[datatype]
    message = encode_infer_request("m", {"x": arr}, version="v2")
    call = decode_infer_request(message.SerializeToString())
    assert (call.model_name, call.model_version) == ("m", "v2")
    request = call.request
    assert request.datatypes == {"x": datatype}
    assert_same(request.inputs["x"], arr)


def test_raw_inputs_are_views_of_the_request() -> None:
    arrays = {"FP32": SAMPLES["FP32"], "INT64": SAMPLES["INT64"]}
    wire_bytes = tritonclient_request(arrays)
    request = decode_infer_request(wire_bytes).request
    for name, arr in arrays.items():
        decoded = request.inputs[name]
        assert not decoded.flags.writeable
        assert not decoded.flags.owndata
        # The array's memory lies inside the serialized request: nothing copied.
        start = np.frombuffer(wire_bytes, np.uint8).ctypes.data
        assert start <= decoded.ctypes.data
        assert decoded.ctypes.data + arr.nbytes <= start + len(wire_bytes)


def test_fields_in_any_order_and_unknown_fields() -> None:
    arr = SAMPLES["FP32"]
    message = encode_infer_request("m", {"x": arr}, request_id="r")
    raw = message.raw_input_contents[0]
    del message.raw_input_contents[:]
    # Raw contents first, then an unknown varint field 15, then everything else.
    unknown = bytes([15 << 3 | 0, 1])
    field7 = service_pb2.ModelInferRequest(raw_input_contents=[raw])
    wire_bytes = field7.SerializeToString() + unknown + message.SerializeToString()
    call = decode_infer_request(wire_bytes)
    assert call.request.id == "r"
    assert_same(call.request.inputs["x"], arr)


def test_several_inputs_keep_order_outputs_id_and_parameters() -> None:
    arrays = {"BYTES": SAMPLES["BYTES"], "FP32": SAMPLES["FP32"]}
    message = tritonclient_request(
        arrays,
        version="v3",
        request_id="abc",
        outputs=["b", "a"],
        parameters={"x-session-id": "s1", "n": 3, "f": 0.5, "flag": True},
    )
    request = decode_infer_request(message).request
    assert list(request.inputs) == ["BYTES", "FP32"]
    for name, arr in arrays.items():
        assert_same(request.inputs[name], arr)
    assert request.id == "abc"
    assert request.outputs == [RequestedOutput("b", True), RequestedOutput("a", True)]
    assert request.parameters == {"x-session-id": "s1", "n": 3, "f": 0.5, "flag": True}


TYPED: list[tuple[str, str, list[Any]]] = [
    ("BOOL", "bool_contents", [True, False]),
    ("INT8", "int_contents", [-128, 127]),
    ("INT16", "int_contents", [-(2**15), 2**15 - 1]),
    ("INT32", "int_contents", [-(2**31), 2**31 - 1]),
    ("INT64", "int64_contents", [-(2**63), 2**63 - 1]),
    ("UINT8", "uint_contents", [0, 255]),
    ("UINT16", "uint_contents", [0, 65535]),
    ("UINT32", "uint_contents", [0, 2**32 - 1]),
    ("UINT64", "uint64_contents", [0, 2**64 - 1]),
    ("FP32", "fp32_contents", [0.5, -2.0]),
    ("FP64", "fp64_contents", [0.1, -1e300]),
    ("BYTES", "bytes_contents", [b"a", b"\xff"]),
]


@pytest.mark.parametrize(("datatype", "field", "values"), TYPED)
def test_typed_contents(datatype: str, field: str, values: list[Any]) -> None:
    request = decode(raw_request(tensor("x", datatype, [1, 2], **{field: values})))
    decoded = request.inputs["x"]
    assert decoded.shape == (1, 2)
    assert decoded.reshape(-1).tolist() == values
    if datatype != "BYTES":
        assert decoded.dtype == numpy_dtype(datatype)


def test_empty_tensor_needs_no_contents() -> None:
    request = decode(raw_request(tensor("x", "FP32", [0, 3])))
    assert request.inputs["x"].shape == (0, 3)
    assert request.inputs["x"].dtype == np.float32


FP32_PAIR = np.array([1.0, 2.0], dtype=np.float32).tobytes()
BAD_REQUESTS: list[tuple[str, Any, str]] = [
    (
        "fewer raw contents than inputs",
        raw_request(
            tensor("a", "FP32", [2]), tensor("b", "FP32", [2]), raw=[FP32_PAIR]
        ),
        "1 raw_input_contents for 2 inputs",
    ),
    (
        "raw length does not match shape",
        raw_request(tensor("a", "FP32", [3]), raw=[FP32_PAIR]),
        "holds 8 bytes but shape [3] of FP32 needs 12",
    ),
    (
        "BOOL byte that is not 0 or 1",
        raw_request(tensor("a", "BOOL", [2]), raw=[b"\x01\x02"]),
        "BOOL bytes must be 0 or 1",
    ),
    (
        "BYTES element overruns",
        raw_request(tensor("a", "BYTES", [1]), raw=[struct.pack("<I", 10) + b"abc"]),
        "overruns",
    ),
    (
        "BYTES with trailing bytes",
        raw_request(tensor("a", "BYTES", [1]), raw=[struct.pack("<I", 1) + b"ab"]),
        "1 bytes after their 1 elements",
    ),
    (
        "BYTES shape larger than the data",
        raw_request(tensor("a", "BYTES", [1000]), raw=[b"\x00" * 8]),
        "too small for 1000 BYTES elements",
    ),
    (
        "negative dimension",
        raw_request(tensor("a", "FP32", [-1, 2]), raw=[FP32_PAIR]),
        "negative dimension",
    ),
    (
        "unknown datatype",
        raw_request(tensor("a", "FLOAT", [2]), raw=[FP32_PAIR]),
        "unknown datatype 'FLOAT'",
    ),
    (
        "input without a name",
        raw_request(tensor("", "FP32", [2]), raw=[FP32_PAIR]),
        "inputs[0] has no name",
    ),
    (
        "input named twice",
        raw_request(
            tensor("a", "FP32", [2]),
            tensor("a", "FP32", [2]),
            raw=[FP32_PAIR, FP32_PAIR],
        ),
        "appears more than once",
    ),
    (
        "no data at all",
        raw_request(tensor("a", "FP32", [2])),
        "neither contents nor raw data",
    ),
    (
        "typed and raw data",
        raw_request(tensor("a", "FP32", [2], fp32_contents=[1, 2]), raw=[FP32_PAIR]),
        "both contents and raw_input_contents",
    ),
    (
        "typed contents of the wrong field",
        raw_request(tensor("a", "FP32", [2], int_contents=[1, 2])),
        "carries its data in fp32_contents, not int_contents",
    ),
    (
        "typed count does not match shape",
        raw_request(tensor("a", "FP32", [3], fp32_contents=[1, 2])),
        "holds 2 elements but shape [3] needs 3",
    ),
    (
        "typed INT8 out of range",
        raw_request(tensor("a", "INT8", [2], int_contents=[1, 300])),
        "value 300 does not fit INT8",
    ),
    (
        "typed UINT16 out of range",
        raw_request(tensor("a", "UINT16", [1], uint_contents=[70000])),
        "value 70000 does not fit UINT16",
    ),
    (
        "FP16 has no typed field",
        raw_request(tensor("a", "FP16", [2], fp32_contents=[1, 2])),
        "FP16 has no typed contents field",
    ),
]


@pytest.mark.parametrize(
    ("message", "expected"),
    [case[1:] for case in BAD_REQUESTS],
    ids=[case[0] for case in BAD_REQUESTS],
)
def test_bad_requests_are_invalid_input(message: Any, expected: str) -> None:
    with pytest.raises(InvalidInput, match=re.escape(expected)):
        decode(message)


GOOD_WIRE = encode_infer_request("m", {"x": SAMPLES["FP32"]}).SerializeToString()


@pytest.mark.parametrize(
    ("wire_bytes", "expected"),
    [
        (GOOD_WIRE[:-10], "truncated"),
        (GOOD_WIRE + b"\xff" * 11, "varint is malformed"),
        (bytes([1 << 3 | 3]) + GOOD_WIRE, "field 1 has wire type 3"),
        (b"\x0a\x02\xff\xfe", "not a ModelInferRequest"),
    ],
    ids=["truncated", "endless varint", "group", "bad utf-8 name"],
)
def test_malformed_messages_are_invalid_input(wire_bytes: bytes, expected: str) -> None:
    with pytest.raises(InvalidInput, match=expected):
        decode_infer_request(wire_bytes)


def test_shared_memory_and_classification_are_refused() -> None:
    shared = raw_request(tensor("a", "FP32", [2]), raw=[FP32_PAIR])
    shared.inputs[0].parameters["shared_memory_region"].string_param = "r"
    with pytest.raises(InvalidInput, match="shared memory inputs"):
        decode(shared)

    for parameter, message in [
        ("shared_memory_region", "shared memory outputs"),
        ("classification", "classification outputs"),
    ]:
        request = raw_request(tensor("a", "FP32", [2]), raw=[FP32_PAIR])
        output = request.outputs.add(name="y")
        if parameter == "classification":
            output.parameters[parameter].int64_param = 3
        else:
            output.parameters[parameter].string_param = "r"
        with pytest.raises(InvalidInput, match=message):
            decode(request)


def test_output_requested_twice() -> None:
    request = raw_request(tensor("a", "FP32", [2]), raw=[FP32_PAIR])
    request.outputs.add(name="y")
    request.outputs.add(name="y")
    with pytest.raises(InvalidInput, match="requested more than once"):
        decode(request)


# --- responses -------------------------------------------------------------------


@pytest.mark.parametrize("datatype", DATATYPES)
def test_every_datatype_reaches_tritonclient(datatype: str) -> None:
    arr = SAMPLES[datatype]
    message = encode_infer_response(
        InferResponse("m", "v1", {"y": arr, "z": SAMPLES["INT8"]}, id="r1")
    )
    result = triton.InferResult(wire(message))
    assert_same(result.as_numpy("y"), arr)
    assert_same(result.as_numpy("z"), SAMPLES["INT8"])
    response = result.get_response()
    assert (response.model_name, response.model_version, response.id) == (
        "m",
        "v1",
        "r1",
    )
    assert response.outputs[0].datatype == datatype


def test_requested_outputs_choose_and_order() -> None:
    outputs = {"a": SAMPLES["FP32"], "b": SAMPLES["BYTES"], "c": SAMPLES["BOOL"]}
    message = wire(
        encode_infer_response(
            InferResponse("m", "v1", outputs),
            [RequestedOutput("c", True), RequestedOutput("a", True)],
        )
    )
    assert [o.name for o in message.outputs] == ["c", "a"]
    assert len(message.raw_output_contents) == 2
    result = triton.InferResult(message)
    assert_same(result.as_numpy("c"), outputs["c"])
    assert_same(result.as_numpy("a"), outputs["a"])


def test_unknown_requested_output_is_invalid_input() -> None:
    with pytest.raises(InvalidInput, match="'nope' is not an output"):
        encode_infer_response(
            InferResponse("m", "v1", {"a": SAMPLES["FP32"]}),
            [RequestedOutput("nope", True)],
        )


@pytest.mark.parametrize(
    "output",
    [np.array([1 + 2j]), np.array([b"ok", 3], dtype=object)],
    ids=["complex", "bytes-with-int"],
)
def test_outputs_no_datatype_carries_are_model_errors(output: np.ndarray) -> None:
    with pytest.raises(ModelError):
        encode_infer_response(InferResponse("m", "v1", {"y": output}))


def test_response_parameters() -> None:
    message = encode_infer_response(
        InferResponse("m", "v1", {}, parameters={"big": 2**63, "s": "x"})
    )
    assert message.parameters["big"].uint64_param == 2**63
    assert message.parameters["s"].string_param == "x"
    with pytest.raises(ModelError, match="parameter 'bad'"):
        encode_infer_response(InferResponse("m", "v1", {}, parameters={"bad": [1]}))


def test_metadata_responses() -> None:
    server = server_metadata_response(
        {"name": "rayfleet", "version": "0.1.0", "extensions": ["a", "b"]}
    )
    assert (server.name, list(server.extensions)) == ("rayfleet", ["a", "b"])
    model = wire(
        model_metadata_response(
            {
                "name": "digits",
                "versions": ["v1", "v2"],
                "platform": "onnx",
                "inputs": [{"name": "input", "datatype": "FP32", "shape": [-1, 64]}],
                "outputs": [{"name": "label", "datatype": "INT64", "shape": [-1]}],
            }
        )
    )
    assert list(model.versions) == ["v1", "v2"]
    assert model.platform == "onnx"
    assert (model.inputs[0].name, list(model.inputs[0].shape)) == ("input", [-1, 64])
    assert model.outputs[0].datatype == "INT64"


# --- status codes ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (InvalidInput("x"), grpc.StatusCode.INVALID_ARGUMENT),
        (Unauthorized("x"), grpc.StatusCode.UNAUTHENTICATED),
        (ModelNotFound("x"), grpc.StatusCode.NOT_FOUND),
        (VersionNotFound("x"), grpc.StatusCode.NOT_FOUND),
        (Conflict("x"), grpc.StatusCode.FAILED_PRECONDITION),
        (PayloadTooLarge("x"), grpc.StatusCode.RESOURCE_EXHAUSTED),
        (UnsupportedMediaType("x"), grpc.StatusCode.INVALID_ARGUMENT),
        (ModelError("x"), grpc.StatusCode.INTERNAL),
        (ServiceUnavailable("x"), grpc.StatusCode.UNAVAILABLE),
        (DeadlineExceeded("x"), grpc.StatusCode.DEADLINE_EXCEEDED),
        (RayfleetError("x"), grpc.StatusCode.INTERNAL),
    ],
    ids=lambda v: v.name if isinstance(v, grpc.StatusCode) else type(v).__name__,
)
def test_one_status_per_error(error: RayfleetError, code: Any) -> None:
    assert grpc_status(error) == code
