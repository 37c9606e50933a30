"""The one BYTES length-prefix codec, alone and as v2 and gRPC word its errors."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from tritonclient.grpc import service_pb2

from rayfleet.platform.errors import InvalidInput, ModelError
from rayfleet.platform.protocol.bytes_codec import (
    BytesWording,
    decode_bytes,
    encode_bytes,
)
from rayfleet.platform.protocol.grpc_codec import decode_infer_request
from rayfleet.platform.protocol.v2 import decode_request

WORDING = BytesWording(
    too_small="{size} bytes cannot hold {count}",
    ends_before="ends before {index}",
    overruns="{index} of length {length} overruns",
    trailing="{remaining} left after {count}",
)
ELEMENTS = st.lists(st.binary(max_size=40), max_size=12)


def encoded(elements: list[bytes]) -> bytes:
    """The layout written out independently of the codec under test."""
    return b"".join(struct.pack("<I", len(e)) + e for e in elements)


def as_array(elements: list[bytes]) -> np.ndarray:
    arr = np.empty(len(elements), dtype=object)
    arr[:] = elements
    return arr


def decode(data: bytes, count: int) -> np.ndarray:
    return decode_bytes("input 'x'", memoryview(data), count, WORDING)


@given(ELEMENTS)
def test_round_trip(elements: list[bytes]) -> None:
    wire = encode_bytes("output 'x'", as_array(elements), ModelError)
    assert wire == encoded(elements)
    decoded = decode(wire, len(elements))
    assert decoded.dtype == object and decoded.shape == (len(elements),)
    assert [type(e) for e in decoded] == [bytes] * len(elements)
    assert list(decoded) == elements


@given(ELEMENTS, st.binary(max_size=8), st.binary(max_size=8))
def test_reads_a_slice_of_a_larger_buffer(
    elements: list[bytes], before: bytes, after: bytes
) -> None:
    body = before + encoded(elements) + after
    view = memoryview(body)[len(before) : len(body) - len(after)]
    assert list(decode_bytes("x", view, len(elements), WORDING)) == elements


def test_empty_strings_and_no_elements() -> None:
    assert encode_bytes("o", as_array([b"", b""]), ModelError) == bytes(8)
    assert list(decode(bytes(8), 2)) == [b"", b""]
    assert encode_bytes("o", as_array([]), ModelError) == b""
    assert decode(b"", 0).shape == (0,)


def test_str_elements_go_out_as_utf8() -> None:
    arr = np.array(["é", "ab"], dtype=object)
    assert encode_bytes("o", arr, ModelError) == encoded(["é".encode(), b"ab"])
    assert encode_bytes("o", np.array(["é"]), ModelError) == encoded(["é".encode()])


@pytest.mark.parametrize("error", [ModelError, InvalidInput])
def test_other_elements_raise_the_given_error(error: type[ModelError]) -> None:
    with pytest.raises(error, match=r"^output 'o': BYTES element is int, not bytes"):
        encode_bytes("output 'o'", np.array([b"a", 3], dtype=object), error)


@given(ELEMENTS.filter(bool), st.data())
def test_every_truncation_is_refused(
    elements: list[bytes], data: st.DataObject
) -> None:
    wire = encoded(elements)
    cut = data.draw(st.integers(0, len(wire) - 1))
    with pytest.raises(InvalidInput, match=r"^input 'x': "):
        decode(wire[:cut], len(elements))


@given(ELEMENTS.filter(bool), st.data())
def test_an_overlong_prefix_is_refused(
    elements: list[bytes], data: st.DataObject
) -> None:
    index = data.draw(st.integers(0, len(elements) - 1))
    wire = bytearray(encoded(elements))
    at = sum(4 + len(e) for e in elements[:index])
    remaining = len(wire) - at - 4
    longer = data.draw(st.integers(remaining + 1, 2**32 - 1))
    struct.pack_into("<I", wire, at, longer)
    with pytest.raises(
        InvalidInput, match=rf"^input 'x': {index} of length {longer} overruns$"
    ):
        decode(bytes(wire), len(elements))


@given(ELEMENTS, st.binary(min_size=1, max_size=8))
def test_bytes_after_the_last_element_are_refused(
    elements: list[bytes], extra: bytes
) -> None:
    with pytest.raises(
        InvalidInput, match=rf"^input 'x': {len(extra)} left after {len(elements)}$"
    ):
        decode(encoded(elements) + extra, len(elements))


def test_each_error_is_worded() -> None:
    cases = [
        (b"\x00" * 7, 2, "input 'x': 7 bytes cannot hold 2"),
        (encoded([b"a"]) + b"zzz", 2, "ends before 1"),
        (struct.pack("<I", 9) + b"abc", 1, "0 of length 9 overruns"),
        (encoded([b"a"]) + b"zz", 1, "2 left after 1"),
    ]
    for wire, count, message in cases:
        with pytest.raises(InvalidInput, match=message):
            decode(wire, count)


def test_a_huge_count_is_refused_before_allocating() -> None:
    with pytest.raises(InvalidInput, match="8 bytes cannot hold 1000000000"):
        decode(bytes(8), 10**9)


# The protocols' own wording, exactly as clients have always seen it.
V2_MESSAGES = [
    (bytes(7), 2, "input 'x': binary_data_size 7 is too small for 2 BYTES elements"),
    (encoded([b"a"]) + b"zzz", 2, "input 'x': binary BYTES data ends before element 1"),
    (
        struct.pack("<I", 9) + b"abc",
        1,
        "input 'x': BYTES element 0 of length 9 overruns binary_data_size",
    ),
    (
        encoded([b"a"]) + b"zz",
        1,
        "input 'x': binary BYTES data has 2 bytes after its 1 elements",
    ),
]
GRPC_MESSAGES = [
    (
        bytes(7),
        2,
        "input 'x': raw_input_contents of 7 bytes is too small for 2 BYTES elements",
    ),
    (encoded([b"a"]) + b"zzz", 2, "input 'x': raw BYTES end before element 1"),
    (
        struct.pack("<I", 9) + b"abc",
        1,
        "input 'x': BYTES element 0 of length 9 overruns raw_input_contents",
    ),
    (
        encoded([b"a"]) + b"zz",
        1,
        "input 'x': raw BYTES have 2 bytes after their 1 elements",
    ),
]


@pytest.mark.parametrize(("wire", "count", "message"), V2_MESSAGES)
def test_v2_wording(wire: bytes, count: int, message: str) -> None:
    spec = {
        "name": "x",
        "shape": [count],
        "datatype": "BYTES",
        "parameters": {"binary_data_size": len(wire)},
    }
    header = json.dumps({"inputs": [spec]}).encode()
    with pytest.raises(InvalidInput) as raised:
        decode_request(header + wire, len(header))
    assert raised.value.message == message


@pytest.mark.parametrize(("wire", "count", "message"), GRPC_MESSAGES)
def test_grpc_wording(wire: bytes, count: int, message: str) -> None:
    request = service_pb2.ModelInferRequest(model_name="m")
    request.inputs.add(name="x", datatype="BYTES", shape=[count])
    request.raw_input_contents.append(wire)
    with pytest.raises(InvalidInput) as raised:
        decode_infer_request(request.SerializeToString())
    assert raised.value.message == message
