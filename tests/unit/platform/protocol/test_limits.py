"""The edge checks: what an input may be, in every format, before numpy sees it.

Each hostile input of issue 15 gets InvalidInput (400) or PayloadTooLarge (413)
naming the input, never another exception; property tests then throw generated
shapes, datatypes and bodies at every codec and allow only those two errors.
"""

from __future__ import annotations

import contextlib
import json
import tracemalloc
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tritonclient.grpc import service_pb2

from rayfleet.platform.errors import InvalidInput, PayloadTooLarge
from rayfleet.platform.protocol import (
    DATATYPES,
    INT64_MAX,
    MAX_RANK,
    check_shape,
    decode_arrow_request,
    decode_request,
    decode_v1_request,
    decoded_bytes,
    parse_header_length,
)
from rayfleet.platform.protocol.grpc_codec import decode_infer_request

EXPECTED = (InvalidInput, PayloadTooLarge)
SMALL_LIMIT = 1 << 20


def v2_json(shape: object, data: object, datatype: str = "FP32") -> bytes:
    entry = {"name": "x", "datatype": datatype, "shape": shape, "data": data}
    return json.dumps({"inputs": [entry]}).encode()


def v2_binary(shape: object, payload: bytes, datatype: str = "FP32") -> bytes:
    entry = {
        "name": "x",
        "datatype": datatype,
        "shape": shape,
        "parameters": {"binary_data_size": len(payload)},
    }
    header = json.dumps({"inputs": [entry]}).encode()
    return header + payload


def grpc_wire(shape: list[int], raw: bytes | None, datatype: str = "FP32") -> bytes:
    message = service_pb2.ModelInferRequest(model_name="m")
    message.inputs.add(name="x", datatype=datatype, shape=shape)
    if raw is not None:
        message.raw_input_contents.append(raw)
    return bytes(message.SerializeToString())


def arrow_stream(
    column: Any, metadata: dict[bytes, bytes] | None = None, compression: Any = None
) -> bytes:
    field = pa.field("x", column.type, nullable=False, metadata=metadata)
    batch = pa.RecordBatch.from_arrays([column], schema=pa.schema([field]))
    sink = pa.BufferOutputStream()
    options = pa.ipc.IpcWriteOptions(compression=compression)
    with pa.ipc.new_stream(sink, batch.schema, options=options) as writer:
        writer.write_batch(batch)
    stream: bytes = sink.getvalue().to_pybytes()
    return stream


# -- check_shape itself ---------------------------------------------------------


@pytest.mark.parametrize(
    ("shape", "message"),
    [
        ([1] * (MAX_RANK + 1), "33 dimensions; at most 32"),
        ([0, INT64_MAX], "too large for any array"),
        ([2**62, 2], "too large for any array"),
        ([INT64_MAX + 1], "over int64"),
        ([-1, 2], "negative dimension"),
        ([True, 2], "'shape' must be a list of integers"),
        ([1.0], "'shape' must be a list of integers"),
        ("[1]", "'shape' must be a list of integers"),
    ],
)
def test_check_shape_refuses(shape: object, message: str) -> None:
    with pytest.raises(InvalidInput, match=r"^input 'x': .*" + message):
        check_shape("input 'x'", shape, 4)


def test_check_shape_accepts_what_numpy_builds() -> None:
    assert check_shape("x", [1] * MAX_RANK, 8) == (1,) * MAX_RANK
    assert check_shape("x", (0, 2**40), 8) == (0, 2**40)
    np.empty(0, np.float64).reshape((0, 2**40))
    assert check_shape("x", [], 8) == ()


def test_decoded_bytes_counts_bytes_elements_at_a_fixed_cost() -> None:
    assert decoded_bytes([3, 4], 4) == 48
    assert decoded_bytes([2], None) > 2 * 8


# -- issue 15, class 1: shapes numpy cannot build -------------------------------


def test_v2_json_with_65_dimensions() -> None:
    with pytest.raises(InvalidInput, match="input 'x': shape has 65 dimensions"):
        decode_request(v2_json([1] * 65, [1.0]), None)


def test_v2_json_zero_size_shape_with_an_overflowing_dimension() -> None:
    with pytest.raises(InvalidInput, match=r"input 'x': .*too large for any array"):
        decode_request(v2_json([0, 9223372036854775807], []), None)


def test_v2_binary_with_65_dimensions_and_overflowing_shape() -> None:
    body = v2_binary([1] * 65, b"\0" * 4)
    with pytest.raises(InvalidInput, match="input 'x': shape has 65 dimensions"):
        decode_request(body, len(body) - 4)
    body = v2_binary([0, 9223372036854775807], b"")
    with pytest.raises(InvalidInput, match=r"input 'x': .*too large"):
        decode_request(body, len(body))


def test_v1_nesting_deeper_than_the_limit() -> None:
    data: Any = [1.0]
    for _ in range(MAX_RANK):
        data = [data]
    body = json.dumps({"inputs": data}).encode()
    with pytest.raises(InvalidInput, match="input 'x': shape has 33 dimensions"):
        decode_v1_request(body, ["x"], ["FP32"])


def test_grpc_with_65_dimensions_and_overflowing_shape() -> None:
    with pytest.raises(InvalidInput, match="input 'x': shape has 65 dimensions"):
        decode_infer_request(grpc_wire([1] * 65, b"\0" * 4))
    with pytest.raises(InvalidInput, match=r"input 'x': .*too large"):
        decode_infer_request(grpc_wire([0, 9223372036854775807], None))


def test_arrow_metadata_shape_with_70_dimensions() -> None:
    body = arrow_stream(
        pa.array([1.0], pa.float32()), {b"shape": json.dumps([1] * 70).encode()}
    )
    with pytest.raises(InvalidInput, match="input 'x': metadata shape has 70"):
        decode_arrow_request(body)


def test_arrow_metadata_shape_over_int64() -> None:
    body = arrow_stream(
        pa.array([], pa.float32()),
        {b"shape": json.dumps([0, 2**63]).encode()},
    )
    with pytest.raises(InvalidInput, match=r"input 'x' metadata: .*over int64"):
        decode_arrow_request(body)


def test_arrow_fixed_size_lists_nested_too_deep() -> None:
    column: Any = pa.array([1.0], pa.float32())
    for _ in range(MAX_RANK + 2):
        column = pa.FixedSizeListArray.from_arrays(column, 1)
    with pytest.raises(InvalidInput, match="input 'x': fixed-size lists nest"):
        decode_arrow_request(arrow_stream(column))


# -- issue 15, class 2: Inference-Header-Content-Length -------------------------


@pytest.mark.parametrize(
    "value", ["9" * 5000, "\u00b2", "12\u00b2", "", "-1", "+1", " 1", "1e3", "0x10"]
)
def test_header_length_is_parsed_strictly(value: str) -> None:
    with pytest.raises(InvalidInput, match="Inference-Header-Content-Length must be"):
        parse_header_length(value)


def test_header_length_accepts_ascii_digits() -> None:
    assert parse_header_length(None) is None
    assert parse_header_length("0") == 0
    assert parse_header_length("0042") == 42


def test_header_length_over_the_body() -> None:
    with pytest.raises(InvalidInput, match="larger than the body"):
        decode_request(b"{}", parse_header_length("9" * 19))


# -- the decoded-size limit, per format -----------------------------------------


def test_v2_json_shape_over_the_decoded_limit() -> None:
    with pytest.raises(PayloadTooLarge, match="input 'x' decodes to 4000000 bytes"):
        decode_request(v2_json([1000, 1000], [1.0]), None, max_decoded_bytes=1000)


def test_v2_binary_over_the_decoded_limit() -> None:
    body = v2_binary([256], b"\0" * 1024)
    with pytest.raises(PayloadTooLarge, match="max_decoded_bytes"):
        decode_request(body, len(body) - 1024, max_decoded_bytes=1023)
    request = decode_request(body, len(body) - 1024, max_decoded_bytes=1024)
    assert request.inputs["x"].shape == (256,)


def test_v2_binary_bytes_shape_its_data_cannot_hold_is_invalid_not_large() -> None:
    body = v2_binary([10**9], b"\0" * 8, "BYTES")
    with pytest.raises(InvalidInput, match="too small for 1000000000 BYTES"):
        decode_request(body, len(body) - 8, max_decoded_bytes=16)


def test_limit_counts_every_input_of_a_request() -> None:
    entries = [
        {"name": name, "datatype": "FP64", "shape": [100], "data": [0.0] * 100}
        for name in ("a", "b")
    ]
    body = json.dumps({"inputs": entries}).encode()
    decode_request(body, None, max_decoded_bytes=1600)
    with pytest.raises(PayloadTooLarge, match="input 'b' decodes to 1600"):
        decode_request(body, None, max_decoded_bytes=1599)


def test_v1_over_the_decoded_limit() -> None:
    body = json.dumps({"instances": [[0] * 100] * 10}).encode()
    assert decode_v1_request(body, ["x"], ["INT64"]).inputs["x"].nbytes == 8000
    with pytest.raises(PayloadTooLarge, match="input 'x' decodes to 8000"):
        decode_v1_request(body, ["x"], ["INT64"], max_decoded_bytes=7999)


def test_grpc_over_the_decoded_limit() -> None:
    wire = grpc_wire([256], b"\0" * 1024)
    with pytest.raises(PayloadTooLarge, match="input 'x' decodes to 1024"):
        decode_infer_request(wire, max_decoded_bytes=1000)
    message = service_pb2.ModelInferRequest(model_name="m")
    tensor = message.inputs.add(name="x", datatype="INT64", shape=[100])
    tensor.contents.int64_contents.extend([0] * 100)
    with pytest.raises(PayloadTooLarge):
        decode_infer_request(message.SerializeToString(), max_decoded_bytes=799)


@pytest.mark.parametrize("compression", [None, "lz4", "zstd"])
def test_arrow_over_the_decoded_limit(compression: str | None) -> None:
    body = arrow_stream(pa.array(np.zeros(1000)), compression=compression)
    assert decode_arrow_request(body, max_decoded_bytes=8000).inputs["x"].size == 1000
    with pytest.raises(PayloadTooLarge, match="Arrow request decodes to 8000"):
        decode_arrow_request(body, max_decoded_bytes=7999)


def test_arrow_bool_and_bytes_count_what_numpy_makes_of_them() -> None:
    bools = arrow_stream(pa.array([True] * 800))
    with pytest.raises(PayloadTooLarge, match="input 'x' decodes to"):
        decode_arrow_request(bools, max_decoded_bytes=800)
    strings = arrow_stream(pa.array([b""] * 100, pa.binary()))
    with pytest.raises(PayloadTooLarge, match="input 'x' decodes to"):
        decode_arrow_request(strings, max_decoded_bytes=1000)


def test_small_zstd_arrow_body_is_refused_before_it_expands() -> None:
    """The issue's example: a few KB of zstd that expand to 256 MiB."""
    limit = 64 * 1024 * 1024
    rows = np.zeros((1 << 20) * 64, np.float32)
    column = pa.FixedSizeListArray.from_arrays(pa.array(rows), 64)
    body = arrow_stream(column, compression="zstd")
    del rows, column
    assert len(body) < 16 * 1024
    pool_before = pa.total_allocated_bytes()
    tracemalloc.start()
    try:
        with pytest.raises(PayloadTooLarge, match="over the 67108864-byte"):
            decode_arrow_request(body, max_decoded_bytes=limit)
        _, python_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert python_peak < 2 * limit
    # Arrow's own allocations (where decompression would go) are not traced
    # by tracemalloc; its pool must not have grown either.
    assert pa.total_allocated_bytes() - pool_before < 2 * limit


# -- property tests: only InvalidInput or PayloadTooLarge, whatever is sent ------

dims = st.one_of(
    st.integers(0, 4),
    st.integers(-3, 2**64 + 3),
    st.sampled_from([INT64_MAX, INT64_MAX + 1, 2**62, 2**31]),
    st.booleans(),
    st.floats(allow_nan=False),
    st.none(),
)
shapes = st.lists(dims, max_size=70)
datatypes = st.one_of(st.sampled_from(DATATYPES), st.text(max_size=6))
json_values = st.recursive(
    st.one_of(
        st.integers(-(2**70), 2**70),
        st.floats(),
        st.booleans(),
        st.text(max_size=4),
        st.none(),
    ),
    lambda children: st.lists(children, max_size=4),
    max_leaves=30,
)
FUZZ = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


def _decodes_or_refuses(decode: Any, *args: Any, **kwargs: Any) -> None:
    with contextlib.suppress(EXPECTED):
        decode(*args, **kwargs)


@FUZZ
@given(shape=shapes, data=json_values, datatype=datatypes)
def test_v2_json_property(shape: object, data: object, datatype: str) -> None:
    entry = {"name": "x", "datatype": datatype, "shape": shape, "data": data}
    body = json.dumps({"inputs": [entry]}).encode()
    _decodes_or_refuses(decode_request, body, None, max_decoded_bytes=SMALL_LIMIT)


@FUZZ
@given(
    shape=shapes,
    payload=st.binary(max_size=64),
    datatype=datatypes,
    declared=st.integers(-2, 80),
)
def test_v2_binary_property(
    shape: object, payload: bytes, datatype: str, declared: int
) -> None:
    entry = {
        "name": "x",
        "datatype": datatype,
        "shape": shape,
        "parameters": {"binary_data_size": declared},
    }
    header = json.dumps({"inputs": [entry]}).encode()
    _decodes_or_refuses(
        decode_request,
        header + payload,
        len(header),
        max_decoded_bytes=SMALL_LIMIT,
    )


@FUZZ
@given(data=json_values, datatype=st.sampled_from(DATATYPES), rows=st.booleans())
def test_v1_property(data: object, datatype: str, rows: bool) -> None:
    body = json.dumps({"instances" if rows else "inputs": data}).encode()
    _decodes_or_refuses(
        decode_v1_request, body, ["x"], [datatype], max_decoded_bytes=SMALL_LIMIT
    )


@FUZZ
@given(
    shape=st.lists(st.integers(-(2**63), INT64_MAX), max_size=70),
    raw=st.one_of(st.none(), st.binary(max_size=64)),
    datatype=datatypes,
)
def test_grpc_property(shape: list[int], raw: bytes | None, datatype: str) -> None:
    _decodes_or_refuses(
        decode_infer_request,
        grpc_wire(shape, raw, datatype),
        max_decoded_bytes=SMALL_LIMIT,
    )


@FUZZ
@given(
    metadata_shape=st.one_of(st.none(), shapes, json_values),
    declared=st.one_of(st.none(), datatypes),
    rows=st.integers(0, 8),
    width=st.integers(1, 4),
)
def test_arrow_metadata_property(
    metadata_shape: object, declared: str | None, rows: int, width: int
) -> None:
    metadata = {}
    if metadata_shape is not None:
        metadata[b"shape"] = json.dumps(metadata_shape).encode()
    if declared is not None:
        metadata[b"datatype"] = declared.encode()
    column = pa.FixedSizeListArray.from_arrays(
        pa.array(np.zeros(rows * width, np.float32)), width
    )
    _decodes_or_refuses(
        decode_arrow_request,
        arrow_stream(column, metadata),
        max_decoded_bytes=SMALL_LIMIT,
    )


_ARROW_SEEDS = [
    arrow_stream(pa.array(np.arange(64, dtype=np.float64)), compression="zstd"),
    arrow_stream(pa.array(np.arange(64, dtype=np.int32)), compression="lz4"),
    arrow_stream(pa.array([b"ab", b"", b"c"] * 8, pa.binary())),
]


@FUZZ
@given(
    seed=st.sampled_from(_ARROW_SEEDS),
    edits=st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), max_size=6),
    cut=st.integers(0, 10**6),
)
def test_arrow_corrupted_bytes_property(
    seed: bytes, edits: list[tuple[int, int]], cut: int
) -> None:
    body = bytearray(seed)
    for position, value in edits:
        body[position % len(body)] = value
    _decodes_or_refuses(
        decode_arrow_request,
        bytes(body[: max(cut, len(body) // 2)]),
        max_decoded_bytes=SMALL_LIMIT,
    )
