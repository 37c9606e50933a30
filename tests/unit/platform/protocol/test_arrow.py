from __future__ import annotations

import contextlib
import struct
from typing import Any

import ml_dtypes
import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from rayfleet.platform.errors import InvalidInput, ModelError
from rayfleet.platform.protocol import (
    ARROW_CONTENT_TYPE,
    DATATYPES,
    InferResponse,
    decode_arrow_request,
    encode_arrow_response,
    numpy_dtype,
)
from rayfleet.testing import decode_arrow_response, encode_arrow_request

ROWS = 4
SAMPLES: dict[str, np.ndarray] = {
    "BOOL": np.array([True, False, True, True]),
    "UINT8": np.arange(ROWS * 3, dtype=np.uint8).reshape(ROWS, 3),
    "UINT16": np.array([0, 1, 2, 65535], dtype=np.uint16),
    "UINT32": np.array([0, 1, 2, 2**32 - 1], dtype=np.uint32),
    "UINT64": np.array([0, 1, 2, 2**64 - 1], dtype=np.uint64),
    "INT8": np.array([-128, 0, 1, 127], dtype=np.int8),
    "INT16": np.arange(ROWS * 2, dtype=np.int16).reshape(ROWS, 2) - 4,
    "INT32": np.array([-(2**31), 0, 1, 2**31 - 1], dtype=np.int32),
    "INT64": np.array([-(2**63), 0, 1, 2**63 - 1], dtype=np.int64),
    "FP16": np.array([0.5, -1.25, 65504.0, np.inf], dtype=np.float16),
    "FP32": np.linspace(-1, 1, ROWS * 3 * 8 * 8, dtype=np.float32).reshape(
        ROWS, 3, 8, 8
    ),
    "FP64": np.array([[0.1], [np.nan], [-1.7e308], [5e-324]]),
    "BF16": np.array([[1.5, -2.0]] * ROWS, dtype=ml_dtypes.bfloat16),
    "BYTES": np.array([[b"abc", b""], ["é".encode(), b"\xff\x00"]] * 2, dtype=object),
}


def stream(*batches: Any, schema: Any = None) -> bytes:
    """Raw IPC stream bytes of these record batches, built with pyarrow alone."""
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, schema or batches[0].schema) as writer:
        for batch in batches:
            writer.write_batch(batch)
    result: bytes = sink.getvalue().to_pybytes()
    return result


def assert_same(actual: np.ndarray, expected: np.ndarray) -> None:
    assert actual.shape == expected.shape
    assert actual.dtype == expected.dtype
    if expected.dtype == object:
        assert actual.tolist() == expected.tolist()
    else:
        np.testing.assert_array_equal(
            actual.astype(np.float64) if actual.dtype.kind == "V" else actual,
            expected.astype(np.float64) if expected.dtype.kind == "V" else expected,
        )


def test_content_type() -> None:
    assert ARROW_CONTENT_TYPE == "application/vnd.apache.arrow.stream"


def test_request_round_trip_every_datatype() -> None:
    request = decode_arrow_request(encode_arrow_request(SAMPLES, request_id="r-9"))
    assert list(request.inputs) == list(SAMPLES)
    assert request.datatypes == {name: name for name in SAMPLES}
    assert request.id == "r-9"
    for name, arr in SAMPLES.items():
        assert_same(request.inputs[name], arr)


def test_response_round_trip_and_metadata() -> None:
    response = InferResponse("digits", "3", dict(SAMPLES), id="abc")
    body = encode_arrow_response(response)
    outputs = decode_arrow_response(body)
    for name, arr in SAMPLES.items():
        assert_same(outputs[name], arr)
    schema = pa.ipc.open_stream(body).schema
    assert schema.metadata[b"model_name"] == b"digits"
    assert schema.metadata[b"model_version"] == b"3"
    assert schema.metadata[b"id"] == b"abc"


def test_tensors_are_nested_fixed_size_lists() -> None:
    body = encode_arrow_request({"x": SAMPLES["FP32"]})
    field = pa.ipc.open_stream(body).schema.field("x")
    assert field.type == pa.list_(pa.list_(pa.list_(pa.float32(), 8), 8), 3)
    assert field.metadata == {b"datatype": b"FP32"}


def test_4d_float32_decode_is_zero_copy() -> None:
    arr = np.random.default_rng(1).random((64, 3, 32, 32), dtype=np.float32)
    body = encode_arrow_request({"x": arr})
    decoded = decode_arrow_request(body).inputs["x"]
    assert decoded.shape == (64, 3, 32, 32)
    np.testing.assert_array_equal(decoded, arr)
    assert np.shares_memory(decoded, np.frombuffer(body, dtype=np.uint8))
    assert not decoded.flags.owndata


def test_sliced_columns_honour_offsets() -> None:
    table_column = pa.FixedSizeListArray.from_arrays(pa.array(np.arange(12.0)), 3)
    batch = pa.record_batch({"x": table_column.slice(1, 2)})
    decoded = decode_arrow_request(stream(batch)).inputs["x"]
    assert decoded.tolist() == [[3.0, 4.0, 5.0], [6.0, 7.0, 8.0]]


def test_plain_columns_and_strings() -> None:
    batch = pa.record_batch(
        {
            "n": pa.array([1, 2, 3], pa.int32()),
            "s": pa.array(["a", "é", ""]),
            "ls": pa.array(["x", "y", "z"], pa.large_string()),
            "sv": pa.array(["p", "q", "r"], pa.string_view()),
            "b": pa.array([b"\x00", b"", b"z"], pa.binary()),
        }
    )
    request = decode_arrow_request(stream(batch))
    assert request.inputs["n"].tolist() == [1, 2, 3]
    assert request.inputs["s"].tolist() == [b"a", "é".encode(), b""]
    assert request.inputs["ls"].tolist() == [b"x", b"y", b"z"]
    assert request.inputs["sv"].tolist() == [b"p", b"q", b"r"]
    assert request.inputs["b"].tolist() == [b"\x00", b"", b"z"]
    assert request.datatypes["s"] == "BYTES"


def test_shape_metadata_over_flat_lists() -> None:
    values = pa.array(np.arange(2 * 12, dtype=np.float32))
    column = pa.FixedSizeListArray.from_arrays(values, 12)
    field = pa.field("x", column.type, metadata={b"shape": b"[3, 2, 2]"})
    batch = pa.RecordBatch.from_arrays([column], schema=pa.schema([field]))
    decoded = decode_arrow_request(stream(batch)).inputs["x"]
    assert decoded.shape == (2, 3, 2, 2)
    np.testing.assert_array_equal(decoded.reshape(-1), np.arange(24, dtype=np.float32))


def test_canonical_fixed_shape_tensor() -> None:
    arr = np.arange(2 * 3 * 4, dtype=np.int16).reshape(2, 3, 4)
    column = pa.FixedShapeTensorArray.from_numpy_ndarray(arr)
    body = stream(pa.record_batch([column], names=["t"]))
    request = decode_arrow_request(body)
    assert_same(request.inputs["t"], arr)
    assert request.datatypes["t"] == "INT16"


def test_zero_sized_dimensions() -> None:
    inputs = {
        "empty_rows": np.zeros((0, 2, 3), np.float32),
        "empty_rows_bytes": np.zeros((0,), dtype=object),
    }
    decoded = decode_arrow_request(encode_arrow_request(inputs)).inputs
    assert decoded["empty_rows"].shape == (0, 2, 3)
    assert decoded["empty_rows_bytes"].shape == (0,)
    inner = {"x": np.zeros((3, 0, 2), np.int8)}
    assert decode_arrow_request(encode_arrow_request(inner)).inputs["x"].shape == (
        3,
        0,
        2,
    )


def test_str_and_big_endian_arrays_encode() -> None:
    inputs = {"s": np.array(["é", "b"]), "f": np.array([1.0, 2.0], dtype=">f8")}
    decoded = decode_arrow_request(encode_arrow_request(inputs)).inputs
    assert decoded["s"].tolist() == ["é".encode(), b"b"]
    assert decoded["f"].tolist() == [1.0, 2.0]


def _null_in_child() -> bytes:
    values = pa.array([1.0, None, 3.0, 4.0], pa.float32())
    column = pa.FixedSizeListArray.from_arrays(values, 2)
    return stream(pa.record_batch({"x": column}))


def _null_row() -> bytes:
    column = pa.array([[1.0, 2.0], None], pa.list_(pa.float32(), 2))
    return stream(pa.record_batch({"x": column}))


def _with_field(column: Any, **metadata: bytes) -> bytes:
    field = pa.field("x", column.type, metadata=metadata)
    return stream(pa.RecordBatch.from_arrays([column], schema=pa.schema([field])))


def _permuted() -> bytes:
    tensor_type = pa.fixed_shape_tensor(pa.int8(), [2, 3], permutation=[1, 0])
    storage = pa.array([[0] * 6], pa.list_(pa.int8(), 6))
    column = pa.ExtensionArray.from_storage(tensor_type, storage)
    return stream(pa.record_batch([column], names=["x"]))


def _two_batches() -> bytes:
    batch = pa.record_batch({"x": pa.array([1, 2])})
    return stream(batch, batch)


def _duplicate_names() -> bytes:
    schema = pa.schema([pa.field("x", pa.int8()), pa.field("x", pa.int8())])
    columns = [pa.array([1], pa.int8()), pa.array([2], pa.int8())]
    return stream(pa.RecordBatch.from_arrays(columns, schema=schema))


def _bad_string_offsets() -> bytes:
    body = stream(pa.record_batch({"x": pa.array(["ab", "cd"])}))
    offsets = struct.pack("<3i", 0, 2, 4)
    assert body.count(offsets) == 1
    return body.replace(offsets, struct.pack("<3i", 0, 2, 4000))


def _non_utf8_name() -> bytes:
    body = stream(pa.record_batch({"xé": pa.array([1])}))
    assert body.count("é".encode()) == 1
    return body.replace("é".encode(), b"\xff\xfe")


BAD_BODIES: list[tuple[str, bytes, str]] = [
    ("empty body", b"", "request body is not an Arrow IPC stream"),
    ("garbage", b"not arrow at all", "request body is not an Arrow IPC stream"),
    (
        "truncated",
        encode_arrow_request({"x": np.zeros(64)})[:-40],
        "request body is not an Arrow IPC stream",
    ),
    (
        "no batches",
        stream(schema=pa.schema([pa.field("x", pa.int8())])),
        "exactly one record batch, got 0",
    ),
    ("two batches", _two_batches(), "exactly one record batch, got 2"),
    ("duplicate names", _duplicate_names(), "input 'x' appears more than once"),
    (
        "null value",
        stream(pa.record_batch({"x": pa.array([1.0, None])})),
        "input 'x' has null values",
    ),
    ("null in list child", _null_in_child(), "input 'x' has null values"),
    ("null row", _null_row(), "input 'x' has null values"),
    (
        "null string",
        stream(pa.record_batch({"x": pa.array(["a", None])})),
        "input 'x' has null values",
    ),
    (
        "variable-size list",
        stream(pa.record_batch({"x": pa.array([[1], [2, 3]])})),
        "input 'x': Arrow type list<item: int64> has no v2 datatype",
    ),
    (
        "dictionary",
        stream(pa.record_batch({"x": pa.array(["a", "b"]).dictionary_encode()})),
        "input 'x': Arrow type dictionary",
    ),
    (
        "timestamp",
        stream(pa.record_batch({"x": pa.array([1], pa.timestamp("s"))})),
        "has no v2 datatype",
    ),
    (
        "shape metadata mismatch",
        _with_field(pa.array([[1, 2, 3]], pa.list_(pa.int8(), 3)), shape=b"[2, 2]"),
        "input 'x': metadata shape [2, 2] does not match the 3 elements per row",
    ),
    (
        "shape metadata not json",
        _with_field(pa.array([1], pa.int8()), shape=b"[2,"),
        "input 'x': metadata shape is not valid JSON",
    ),
    (
        "shape metadata negative",
        _with_field(pa.array([1], pa.int8()), shape=b"[-1]"),
        "input 'x': metadata shape must be a list of non-negative integers",
    ),
    (
        "datatype metadata mismatch",
        _with_field(pa.array([1], pa.int8()), datatype=b"FP32"),
        "input 'x': metadata datatype 'FP32' does not match Arrow type int8",
    ),
    ("corrupt offsets", _bad_string_offsets(), "Arrow request is malformed"),
    ("name not utf-8", _non_utf8_name(), "an Arrow input name is not valid UTF-8"),
    ("permuted tensor", _permuted(), "input 'x': permuted fixed_shape_tensor"),
    (
        "other extension type",
        stream(pa.record_batch({"x": pa.array([b"0" * 16], pa.uuid())})),
        "input 'x': Arrow extension type extension<arrow.uuid> is unsupported",
    ),
]


@pytest.mark.parametrize(
    ("body", "message"),
    [pytest.param(body, message, id=case) for case, body, message in BAD_BODIES],
)
def test_bad_bodies_are_invalid_input(body: bytes, message: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        decode_arrow_request(body)
    assert message in caught.value.message


@pytest.mark.parametrize(
    ("inputs", "message"),
    [
        ({"s": np.array(1.0)}, "input 's' is 0-d"),
        (
            {"a": np.zeros(2), "b": np.zeros(3)},
            "inputs differ in their first dimension",
        ),
        ({"c": np.zeros(2, np.complex128)}, "input 'c': numpy dtype complex128"),
        (
            {"o": np.array([b"a", 1], dtype=object)},
            "BYTES elements must be bytes or str",
        ),
        (
            {"o": np.array([b"a", None], dtype=object)},
            "BYTES elements must not be None",
        ),
    ],
)
def test_unencodable_requests(inputs: dict[str, np.ndarray], message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        encode_arrow_request(inputs)


def test_unencodable_responses_are_model_errors() -> None:
    response = InferResponse("m", "1", {"a": np.zeros(2), "b": np.zeros(3)})
    with pytest.raises(ModelError, match="outputs differ in their first dimension"):
        encode_arrow_response(response)


@st.composite
def batches(draw: st.DrawFn) -> dict[str, np.ndarray]:
    """Up to three tensors of random datatypes sharing a first dimension."""
    rows = draw(st.integers(0, 4))
    count = draw(st.integers(1, 3))
    tensors: dict[str, np.ndarray] = {}
    for index in range(count):
        datatype = draw(st.sampled_from(DATATYPES))
        tail = draw(hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=3))
        shape = (rows, *tail)
        if datatype == "BYTES":
            arr = draw(hnp.arrays(object, shape, elements=st.binary(max_size=5)))
        elif datatype == "BF16":
            floats = draw(hnp.arrays(np.float32, shape, elements=st.floats(width=32)))
            with np.errstate(over="ignore"):
                arr = floats.astype(ml_dtypes.bfloat16)
        else:
            arr = draw(hnp.arrays(numpy_dtype(datatype), shape))
        tensors[f"t{index}_{datatype}"] = arr
    return tensors


@settings(max_examples=60, deadline=None)
@given(tensors=batches())
def test_round_trip_property(tensors: dict[str, np.ndarray]) -> None:
    decoded = decode_arrow_request(encode_arrow_request(tensors))
    for name, arr in tensors.items():
        actual = decoded.inputs[name]
        assert actual.shape == arr.shape
        assert decoded.datatypes[name] == name.split("_", 1)[1]
        if arr.dtype == object:
            assert actual.tolist() == arr.tolist()
        else:
            assert actual.dtype == arr.dtype
            np.testing.assert_array_equal(
                actual.view(np.uint8), np.ascontiguousarray(arr).view(np.uint8)
            )


_FUZZ_BODY = encode_arrow_request(
    {"t": SAMPLES["FP32"][:2], "b": SAMPLES["BYTES"][:2], "f": SAMPLES["BF16"][:2]}
)


@settings(max_examples=300, deadline=None)
@given(
    edits=st.lists(
        st.tuples(st.integers(0, len(_FUZZ_BODY) - 1), st.integers(0, 255)),
        min_size=1,
        max_size=3,
    )
)
def test_corrupt_bodies_fail_only_with_invalid_input(
    edits: list[tuple[int, int]],
) -> None:
    body = bytearray(_FUZZ_BODY)
    for position, value in edits:
        body[position] = value
    with contextlib.suppress(InvalidInput):
        decode_arrow_request(bytes(body))
