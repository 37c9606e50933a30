"""The v2 codec against the real Triton HTTP client, both directions."""

from __future__ import annotations

import contextlib
import json
import struct
from typing import Any

import ml_dtypes
import numpy as np
import pytest
import tritonclient.http as triton
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from rayfleet.platform.errors import InvalidInput, ModelError
from rayfleet.platform.protocol import (
    DATATYPES,
    EncodedResponse,
    InferResponse,
    RequestedOutput,
    decode_request,
    encode_response,
    numpy_dtype,
)

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
    "FP32": np.array([[0.1, -3.4e38], [1e-45, 2.0]], dtype=np.float32),
    "FP64": np.array([0.1, -1.7e308, 5e-324], dtype=np.float64),
    "BF16": np.array([[1.5, -2.0], [3.0e38, 0.0]], dtype=ml_dtypes.bfloat16),
    "BYTES": np.array([[b"abc", b""], ["é".encode(), b"x y"]], dtype=object),
}


def triton_request(
    arrays: dict[str, np.ndarray],
    binary: bool,
    outputs: list[triton.InferRequestedOutput] | None = None,
    **kwargs: Any,
) -> tuple[bytes, int | None]:
    """A request body exactly as tritonclient.http would send it."""
    inputs = []
    for name, arr in arrays.items():
        tensor = triton.InferInput(name, list(arr.shape), _datatype_of(name, arr))
        tensor.set_data_from_numpy(arr, binary_data=binary)
        inputs.append(tensor)
    body, header_length = triton.InferenceServerClient.generate_request_body(
        inputs, outputs=outputs, **kwargs
    )
    return body, header_length


def _datatype_of(name: str, arr: np.ndarray) -> str:
    return name if name in DATATYPES else "BYTES"


def triton_result(encoded: EncodedResponse) -> triton.InferResult:
    """Parse an encoded response the way tritonclient.http parses Triton's."""
    return triton.InferResult.from_response_body(
        encoded.body(), verbose=False, header_length=encoded.header_length
    )


def assert_same(actual: np.ndarray, expected: np.ndarray) -> None:
    assert actual.shape == expected.shape
    if expected.dtype == object:
        assert [_as_bytes(x) for x in actual.reshape(-1)] == list(expected.reshape(-1))
        return
    assert actual.dtype == expected.dtype
    if expected.dtype.kind == "f" or expected.dtype == ml_dtypes.bfloat16:
        np.testing.assert_array_equal(
            actual.astype(np.float64), expected.astype(np.float64)
        )
    else:
        np.testing.assert_array_equal(actual, expected)


def _as_bytes(value: Any) -> bytes:
    # tritonclient gives BYTES read from JSON back as str.
    return value.encode() if isinstance(value, str) else bytes(value)


def raw_body(header: dict[str, Any], *binary: bytes) -> tuple[bytes, int | None]:
    head = json.dumps(header).encode()
    return head + b"".join(binary), len(head) if binary else None


# --- requests built by tritonclient ---------------------------------------------


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
@pytest.mark.parametrize("datatype", DATATYPES)
def test_every_datatype_from_tritonclient(datatype: str, binary: bool) -> None:
    arr = SAMPLES[datatype]
    if datatype == "BF16" and not binary:
        # tritonclient refuses BF16 as JSON; other clients send floats.
        body, header_length = raw_body(
            {
                "inputs": [
                    {
                        "name": "BF16",
                        "shape": list(arr.shape),
                        "datatype": "BF16",
                        "data": arr.astype(np.float32).tolist(),
                    }
                ]
            }
        )
    else:
        body, header_length = triton_request({datatype: arr}, binary)
    request = decode_request(body, header_length)
    assert list(request.inputs) == [datatype]
    assert request.datatypes == {datatype: datatype}
    decoded = request.inputs[datatype]
    if datatype != "BYTES":
        assert decoded.dtype == numpy_dtype(datatype)
    assert_same(decoded, arr)


def test_several_inputs_keep_order_and_offsets() -> None:
    arrays = {"BYTES": SAMPLES["BYTES"], "FP32": SAMPLES["FP32"]}
    arrays["UINT8"] = SAMPLES["UINT8"]
    body, header_length = triton_request(arrays, binary=True)
    request = decode_request(body, header_length)
    assert list(request.inputs) == ["BYTES", "FP32", "UINT8"]
    for name, arr in arrays.items():
        assert_same(request.inputs[name], arr)


def test_request_level_fields() -> None:
    body, header_length = triton_request(
        {"FP32": SAMPLES["FP32"]},
        binary=True,
        outputs=[
            triton.InferRequestedOutput("a", binary_data=False),
            triton.InferRequestedOutput("b"),
        ],
        request_id="req-1",
        priority=3,
    )
    request = decode_request(body, header_length)
    assert request.id == "req-1"
    assert request.parameters == {"priority": 3}
    assert request.outputs == [RequestedOutput("a", False), RequestedOutput("b", True)]
    assert request.binary_default is False


def test_no_outputs_means_binary_default() -> None:
    body, header_length = triton_request({"FP32": SAMPLES["FP32"]}, binary=True)
    request = decode_request(body, header_length)
    assert request.outputs == []
    assert request.binary_default is True
    assert "binary_data_output" not in request.parameters


def test_outputs_without_binary_data_inherit_the_default() -> None:
    body, _ = raw_body(
        {
            "inputs": [{"name": "x", "shape": [1], "datatype": "INT8", "data": [1]}],
            "outputs": [{"name": "y"}, {"name": "z", "parameters": {}}],
            "parameters": {"binary_data_output": True},
        }
    )
    request = decode_request(body, None)
    assert request.outputs == [RequestedOutput("y", True), RequestedOutput("z", True)]


def test_json_data_may_be_nested_or_scalar() -> None:
    body, _ = raw_body(
        {
            "inputs": [
                {
                    "name": "n",
                    "shape": [2, 2],
                    "datatype": "FP32",
                    "data": [[1, 2], [3, 4]],
                },
                {"name": "s", "shape": [], "datatype": "INT64", "data": 5},
                {"name": "e", "shape": [0, 3], "datatype": "UINT8", "data": []},
            ]
        }
    )
    request = decode_request(body, None)
    assert request.inputs["n"].tolist() == [[1.0, 2.0], [3.0, 4.0]]
    assert request.inputs["s"].shape == () and int(request.inputs["s"]) == 5
    assert request.inputs["e"].shape == (0, 3)


def test_binary_decode_is_zero_copy() -> None:
    arr = np.random.default_rng(0).random((64, 3, 32, 32), dtype=np.float32)
    body, header_length = triton_request({"FP32": arr}, binary=True)
    decoded = decode_request(body, header_length).inputs["FP32"]
    np.testing.assert_array_equal(decoded, arr)
    assert np.shares_memory(decoded, np.frombuffer(body, dtype=np.uint8))
    assert not decoded.flags.owndata
    assert not decoded.flags.writeable


# --- responses read by tritonclient ---------------------------------------------


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
@pytest.mark.parametrize("datatype", DATATYPES)
def test_every_datatype_to_tritonclient(datatype: str, binary: bool) -> None:
    arr = SAMPLES[datatype]
    response = InferResponse("m", "3", {"out": arr})
    encoded = encode_response(response, [], binary_default=binary)
    assert (encoded.header_length is not None) == binary
    result = triton_result(encoded)
    assert_same(result.as_numpy("out"), arr)
    header = result.get_response()
    assert header["model_name"] == "m"
    assert header["model_version"] == "3"
    assert header["outputs"][0]["datatype"] == datatype


def test_requested_outputs_choose_order_and_encoding() -> None:
    outputs = {"a": SAMPLES["FP32"], "b": SAMPLES["BYTES"], "c": SAMPLES["INT8"]}
    response = InferResponse("m", "1", outputs, id="r", parameters={"k": "v"})
    requested = [RequestedOutput("c", False), RequestedOutput("b", True)]
    encoded = encode_response(response, requested, binary_default=True)
    result = triton_result(encoded)
    header = result.get_response()
    assert [o["name"] for o in header["outputs"]] == ["c", "b"]
    assert "data" in header["outputs"][0]
    assert "binary_data_size" in header["outputs"][1]["parameters"]
    assert header["id"] == "r"
    assert header["parameters"] == {"k": "v"}
    assert_same(result.as_numpy("c"), outputs["c"])
    assert_same(result.as_numpy("b"), outputs["b"])


def test_all_json_response_has_no_header_length() -> None:
    response = InferResponse("m", "1", {"a": SAMPLES["FP64"]})
    encoded = encode_response(response, [RequestedOutput("a", False)], True)
    assert encoded.header_length is None
    assert len(encoded.chunks) == 1
    assert json.loads(encoded.body())["outputs"][0]["data"] == [0.1, -1.7e308, 5e-324]


def test_binary_outputs_are_chunks_of_the_arrays_own_memory() -> None:
    big = np.arange(1 << 20, dtype=np.float32).reshape(1024, 1024)
    response = InferResponse("m", "1", {"big": big, "small": SAMPLES["INT16"]})
    encoded = encode_response(response, [], binary_default=True)
    assert len(encoded.chunks) == 3
    assert np.shares_memory(np.frombuffer(encoded.chunks[1], dtype=np.uint8), big)
    assert encoded.content_length == len(encoded.body())
    assert encoded.header_length == len(encoded.chunks[0])


def test_non_contiguous_and_big_endian_outputs() -> None:
    base = np.arange(24, dtype=np.float32).reshape(4, 6)
    outputs = {"strided": base[:, ::2], "swapped": base.astype(">f4")}
    encoded = encode_response(InferResponse("m", "1", outputs), [], True)
    result = triton_result(encoded)
    np.testing.assert_array_equal(result.as_numpy("strided"), base[:, ::2])
    np.testing.assert_array_equal(result.as_numpy("swapped"), base)


def test_empty_and_scalar_outputs() -> None:
    outputs = {"empty": np.zeros((0, 3), np.int32), "scalar": np.array(2.5)}
    for binary in (True, False):
        result = triton_result(
            encode_response(InferResponse("m", "1", outputs), [], binary)
        )
        assert result.as_numpy("empty").shape == (0, 3)
        assert result.as_numpy("scalar").shape == ()
        assert float(result.as_numpy("scalar")) == 2.5


def test_non_finite_floats_in_json() -> None:
    arr = np.array([np.nan, np.inf, -np.inf], dtype=np.float32)
    result = triton_result(
        encode_response(InferResponse("m", "1", {"f": arr}), [], False)
    )
    np.testing.assert_array_equal(result.as_numpy("f"), arr)


def test_str_arrays_are_bytes_outputs() -> None:
    arr = np.array(["a", "bé"])
    result = triton_result(
        encode_response(InferResponse("m", "1", {"s": arr}), [], True)
    )
    assert result.as_numpy("s").tolist() == [b"a", "bé".encode()]


def test_requested_output_that_does_not_exist() -> None:
    response = InferResponse("m", "1", {"a": SAMPLES["FP32"]})
    with pytest.raises(InvalidInput, match="requested output 'nope' is not an output"):
        encode_response(response, [RequestedOutput("nope")], False)


def test_non_utf8_bytes_cannot_be_json() -> None:
    response = InferResponse("m", "1", {"raw": np.array([b"\xff\xfe"], dtype=object)})
    with pytest.raises(InvalidInput, match="binary_data=true"):
        encode_response(response, [RequestedOutput("raw", False)], False)
    result = triton_result(
        encode_response(response, [RequestedOutput("raw", True)], False)
    )
    assert result.as_numpy("raw").tolist() == [b"\xff\xfe"]


@pytest.mark.parametrize(
    ("outputs", "message"),
    [
        ({"c": np.zeros(2, np.complex64)}, "output 'c': numpy dtype complex64"),
        ({"o": np.array([1, 2], dtype=object)}, "BYTES element is int"),
    ],
)
@pytest.mark.parametrize("binary", [True, False])
def test_unencodable_model_outputs(
    outputs: dict[str, np.ndarray], message: str, binary: bool
) -> None:
    with pytest.raises(ModelError, match=message):
        encode_response(InferResponse("m", "1", outputs), [], binary)


def test_unserializable_response_parameters() -> None:
    response = InferResponse("m", "1", {}, parameters={"x": object()})
    with pytest.raises(ModelError, match="not JSON-serializable"):
        encode_response(response, [], False)


def test_round_trip_through_the_codec() -> None:
    body, header_length = triton_request(
        {"FP32": SAMPLES["FP32"], "BYTES": SAMPLES["BYTES"]},
        binary=True,
        outputs=[triton.InferRequestedOutput("FP32", binary_data=False)],
    )
    request = decode_request(body, header_length)
    response = InferResponse("echo", "1", dict(request.inputs), id=request.id)
    encoded = encode_response(response, request.outputs, request.binary_default)
    result = triton_result(encoded)
    assert_same(result.as_numpy("FP32"), SAMPLES["FP32"])
    assert result.get_output("BYTES") is None


# --- bad requests ---------------------------------------------------------------


def _input(**fields: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {"name": "x", "shape": [2], "datatype": "FP32"}
    spec.update(fields)
    return {key: value for key, value in spec.items() if value is not None}


def _binary_input(datatype: str, shape: list[int], size: object) -> dict[str, Any]:
    return _input(
        datatype=datatype,
        shape=shape,
        parameters={"binary_data_size": size},
    )


def _prefixed(*elements: bytes) -> bytes:
    return b"".join(struct.pack("<I", len(e)) + e for e in elements)


BAD_REQUESTS: list[tuple[str, tuple[bytes, int | None], str]] = [
    ("malformed json", (b'{"inputs": [', None), "not valid JSON"),
    ("not utf-8", (b'{"inputs": "\xff"}', None), "not valid JSON"),
    ("deep nesting", (b"[" * 100_000, None), "not valid JSON"),
    ("not an object", (b"[1]", None), "must be a JSON object"),
    ("missing inputs", raw_body({}), "request has no 'inputs'"),
    ("inputs not a list", raw_body({"inputs": {}}), "'inputs' must be a list"),
    ("input not an object", raw_body({"inputs": [1]}), "inputs[0] must be an object"),
    (
        "missing name",
        raw_body({"inputs": [_input(name=None, data=[1, 2])]}),
        "inputs[0] has no 'name'",
    ),
    (
        "missing shape",
        raw_body({"inputs": [_input(shape=None, data=[1, 2])]}),
        "input 'x' has no 'shape'",
    ),
    (
        "shape not ints",
        raw_body({"inputs": [_input(shape=[2.0], data=[1, 2])]}),
        "input 'x': 'shape' must be a list of integers",
    ),
    (
        "missing datatype",
        raw_body({"inputs": [_input(datatype=None, data=[1, 2])]}),
        "input 'x' has no 'datatype'",
    ),
    (
        "unknown datatype",
        raw_body({"inputs": [_input(datatype="FP8", data=[1, 2])]}),
        "input 'x': unknown datatype 'FP8'",
    ),
    (
        "negative dim",
        raw_body({"inputs": [_input(shape=[-1, 2], data=[1, 2])]}),
        "input 'x': shape [-1, 2] has a negative dimension",
    ),
    (
        "count mismatch",
        raw_body({"inputs": [_input(shape=[2, 2], data=[1, 2, 3])]}),
        "input 'x': data holds 3 elements but shape [2, 2] needs 4",
    ),
    (
        "ragged data",
        raw_body({"inputs": [_input(shape=[3], data=[[1, 2], [3]])]}),
        "input 'x': data is not a rectangular",
    ),
    (
        "uint8 overflow",
        raw_body({"inputs": [_input(datatype="UINT8", data=[1, 300])]}),
        "input 'x': value 300 does not fit UINT8",
    ),
    (
        "string for fp32",
        raw_body({"inputs": [_input(data=["a", "b"])]}),
        "input 'x': FP32 data must be numbers",
    ),
    (
        "float for int32",
        raw_body({"inputs": [_input(datatype="INT32", data=[1, 2.5])]}),
        "input 'x': INT32 data must be integers",
    ),
    (
        "number for bool",
        raw_body({"inputs": [_input(datatype="BOOL", data=[0, 1])]}),
        "input 'x': BOOL data must be true or false",
    ),
    (
        "number for bytes",
        raw_body({"inputs": [_input(datatype="BYTES", data=["a", 1])]}),
        "input 'x': BYTES data must be strings, got number",
    ),
    (
        "fp16 overflow",
        raw_body({"inputs": [_input(datatype="FP16", data=[1.0, 1e6])]}),
        "input 'x': value 1000000.0 overflows FP16",
    ),
    (
        "no data",
        raw_body({"inputs": [_input()]}),
        "input 'x' has neither 'data' nor binary",
    ),
    (
        "duplicate names",
        raw_body({"inputs": [_input(data=[1, 2]), _input(data=[3, 4])]}),
        "input 'x' appears more than once",
    ),
    (
        "binary body too short",
        raw_body({"inputs": [_binary_input("FP32", [4], 16)]}, b"\0" * 8),
        "input 'x': binary_data_size 16 overruns the body; only 8 bytes remain",
    ),
    (
        "binary trailing bytes",
        raw_body({"inputs": [_binary_input("FP32", [2], 8)]}, b"\0" * 11),
        "body has 3 bytes after the last binary input",
    ),
    (
        "trailing bytes with json inputs",
        (b'{"inputs": []}  extra', 14),
        "body has 7 bytes after the last binary input",
    ),
    (
        "header longer than body",
        (b'{"inputs": []}', 15),
        "15 is larger than the body (14 bytes)",
    ),
    ("negative header length", (b'{"inputs": []}', -1), "-1 is negative"),
    (
        "size not a multiple",
        raw_body({"inputs": [_binary_input("FP32", [2], 6)]}, b"\0" * 6),
        "input 'x': binary_data_size 6 is not a multiple of the FP32 element size "
        "(4 bytes)",
    ),
    (
        "binary count mismatch",
        raw_body({"inputs": [_binary_input("INT16", [3], 4)]}, b"\0" * 4),
        "input 'x': binary data holds 2 elements but shape [3] needs 3",
    ),
    (
        "binary without header length",
        (json.dumps({"inputs": [_binary_input("UINT8", [1], 1)]}).encode(), None),
        "has binary_data_size but the request has no Inference-Header-Content-Length",
    ),
    (
        "data and binary",
        raw_body(
            {"inputs": [{**_binary_input("UINT8", [1], 1), "data": [1]}]},
            b"\x01",
        ),
        "input 'x' has both 'data' and binary_data_size",
    ),
    (
        "binary size not an int",
        raw_body({"inputs": [_binary_input("UINT8", [1], "1")]}, b"\x01"),
        "input 'x': binary_data_size must be an integer",
    ),
    (
        "negative binary size",
        raw_body({"inputs": [_binary_input("UINT8", [1], -1)]}, b"\x01"),
        "input 'x': binary_data_size is negative",
    ),
    (
        "bool byte not 0 or 1",
        raw_body({"inputs": [_binary_input("BOOL", [2], 2)]}, b"\x01\x02"),
        "input 'x': BOOL bytes must be 0 or 1",
    ),
    (
        "bytes element overruns",
        raw_body(
            {"inputs": [_binary_input("BYTES", [1], 6)]}, struct.pack("<I", 5) + b"ab"
        ),
        "input 'x': BYTES element 0 of length 5 overruns binary_data_size",
    ),
    (
        "bytes ends early",
        raw_body(
            {"inputs": [_binary_input("BYTES", [2], 8)]}, _prefixed(b"a") + b"zzz"
        ),
        "input 'x': binary BYTES data ends before element 1",
    ),
    (
        "bytes trailing",
        raw_body({"inputs": [_binary_input("BYTES", [1], 7)]}, _prefixed(b"a") + b"zz"),
        "input 'x': binary BYTES data has 2 bytes after its 1 elements",
    ),
    (
        "bytes huge shape",
        raw_body({"inputs": [_binary_input("BYTES", [10**9], 8)]}, _prefixed(b"", b"")),
        "input 'x': binary_data_size 8 is too small for 1000000000 BYTES elements",
    ),
    (
        "shared memory input",
        raw_body({"inputs": [_input(parameters={"shared_memory_region": "r"})]}),
        "input 'x': shared memory inputs are not supported",
    ),
    (
        "input parameters not an object",
        raw_body({"inputs": [_input(parameters=[1], data=[1, 2])]}),
        "input 'x': 'parameters' must be an object",
    ),
    (
        "id not a string",
        raw_body({"id": 7, "inputs": []}),
        "request 'id' must be a string",
    ),
    (
        "request parameters not an object",
        raw_body({"parameters": 1, "inputs": []}),
        "request: 'parameters' must be an object",
    ),
    (
        "binary_data_output not bool",
        raw_body({"parameters": {"binary_data_output": 1}, "inputs": []}),
        "binary_data_output must be true or false",
    ),
    (
        "outputs not a list",
        raw_body({"inputs": [], "outputs": {}}),
        "'outputs' must be a list",
    ),
    (
        "output without name",
        raw_body({"inputs": [], "outputs": [{}]}),
        "outputs[0] has no 'name'",
    ),
    (
        "duplicate outputs",
        raw_body({"inputs": [], "outputs": [{"name": "y"}, {"name": "y"}]}),
        "output 'y' is requested more than once",
    ),
    (
        "binary_data not bool",
        raw_body(
            {
                "inputs": [],
                "outputs": [{"name": "y", "parameters": {"binary_data": "yes"}}],
            }
        ),
        "output 'y': parameter binary_data must be true or false",
    ),
    (
        "classification",
        raw_body(
            {
                "inputs": [],
                "outputs": [{"name": "y", "parameters": {"classification": 3}}],
            }
        ),
        "output 'y': classification outputs are not supported",
    ),
    (
        "shared memory output",
        raw_body(
            {
                "inputs": [],
                "outputs": [{"name": "y", "parameters": {"shared_memory_region": "r"}}],
            }
        ),
        "output 'y': shared memory outputs are not supported",
    ),
]


@pytest.mark.parametrize(
    ("body", "message"),
    [pytest.param(body, message, id=case) for case, body, message in BAD_REQUESTS],
)
def test_bad_requests_are_invalid_input(
    body: tuple[bytes, int | None], message: str
) -> None:
    with pytest.raises(InvalidInput) as caught:
        decode_request(*body)
    assert message in caught.value.message


# --- properties -----------------------------------------------------------------

_FAST = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


@st.composite
def tensors(draw: st.DrawFn) -> tuple[str, np.ndarray]:
    """A datatype and a random array of it, of 0 to 4 dimensions."""
    datatype = draw(st.sampled_from(DATATYPES))
    shape = draw(hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=4))
    if datatype == "BYTES":
        elements = st.binary(max_size=6) | st.text(max_size=6).map(str.encode)
        return datatype, draw(hnp.arrays(object, shape, elements=elements))
    if datatype == "BF16":
        values = draw(hnp.arrays(np.float32, shape, elements=st.floats(width=32)))
        with np.errstate(over="ignore"):
            return datatype, values.astype(ml_dtypes.bfloat16)
    return datatype, draw(hnp.arrays(numpy_dtype(datatype), shape))


@_FAST
@given(tensor=tensors(), binary=st.booleans())
def test_request_round_trip_property(
    tensor: tuple[str, np.ndarray], binary: bool
) -> None:
    datatype, arr = tensor
    if datatype == "BYTES" and not binary:
        binary = not all(_is_utf8(x) for x in arr.reshape(-1))
    if datatype == "BF16" and not binary:
        body, header_length = raw_body(
            {
                "inputs": [
                    {
                        "name": "BF16",
                        "shape": list(arr.shape),
                        "datatype": "BF16",
                        "data": arr.astype(np.float32).reshape(-1).tolist(),
                    }
                ]
            }
        )
    else:
        body, header_length = triton_request({datatype: arr}, binary)
    decoded = decode_request(body, header_length).inputs[datatype]
    assert_same_nan(decoded, arr)


@_FAST
@given(tensor=tensors(), binary=st.booleans())
def test_response_round_trip_property(
    tensor: tuple[str, np.ndarray], binary: bool
) -> None:
    datatype, arr = tensor
    if datatype == "BYTES" and not binary:
        binary = not all(_is_utf8(x) for x in arr.reshape(-1))
    encoded = encode_response(InferResponse("m", "1", {"out": arr}), [], binary)
    assert_same_nan(triton_result(encoded).as_numpy("out"), arr)


def _is_utf8(value: bytes) -> bool:
    try:
        value.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def assert_same_nan(actual: np.ndarray, expected: np.ndarray) -> None:
    if expected.dtype.kind == "f" or expected.dtype == ml_dtypes.bfloat16:
        assert actual.dtype == expected.dtype and actual.shape == expected.shape
        np.testing.assert_array_equal(
            actual.astype(np.float64), expected.astype(np.float64), strict=True
        )
    else:
        assert_same(actual, expected)


_JSON_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats()
    | st.text(max_size=3)
    | st.sampled_from(DATATYPES)
)
_JSON_VALUES = st.recursive(
    _JSON_SCALARS,
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.sampled_from(["name", "data", "b64"]), children)
    ),
    max_leaves=12,
)
_INPUT_SPECS = st.fixed_dictionaries(
    {},
    optional={
        "name": st.sampled_from(["x", "y"]) | _JSON_VALUES,
        "shape": st.lists(st.integers(-2, 5), max_size=3) | _JSON_VALUES,
        "datatype": st.sampled_from(DATATYPES) | _JSON_VALUES,
        "data": _JSON_VALUES,
        "parameters": st.fixed_dictionaries(
            {}, optional={"binary_data_size": st.integers(-2, 40) | _JSON_VALUES}
        ),
    },
)
_HEADERS = st.fixed_dictionaries(
    {},
    optional={
        "inputs": st.lists(_INPUT_SPECS, max_size=3) | _JSON_VALUES,
        "outputs": _JSON_VALUES,
        "parameters": _JSON_VALUES,
        "id": _JSON_VALUES,
    },
)


@settings(max_examples=300, deadline=None)
@given(header=_HEADERS, tail=st.binary(max_size=40), with_length=st.booleans())
def test_arbitrary_bodies_fail_only_with_invalid_input(
    header: dict[str, Any], tail: bytes, with_length: bool
) -> None:
    head = json.dumps(header).encode()
    with contextlib.suppress(InvalidInput):
        decode_request(head + tail, len(head) if with_length else None)
