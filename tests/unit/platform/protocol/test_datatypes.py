from __future__ import annotations

from typing import Any

import ml_dtypes
import numpy as np
import pytest

from rayfleet.platform.errors import InvalidInput, ModelError
from rayfleet.platform.protocol.datatypes import (
    DATATYPES,
    array_from_json,
    array_to_json,
    element_size,
    little_endian,
    numpy_dtype,
    v2_datatype,
)

EXPECTED: dict[str, Any] = {
    "BOOL": np.bool_,
    "UINT8": np.uint8,
    "UINT16": np.uint16,
    "UINT32": np.uint32,
    "UINT64": np.uint64,
    "INT8": np.int8,
    "INT16": np.int16,
    "INT32": np.int32,
    "INT64": np.int64,
    "FP16": np.float16,
    "FP32": np.float32,
    "FP64": np.float64,
    "BF16": ml_dtypes.bfloat16,
    "BYTES": np.object_,
}


def test_every_v2_datatype_is_known() -> None:
    assert set(DATATYPES) == set(EXPECTED)


@pytest.mark.parametrize("datatype", DATATYPES)
def test_numpy_dtype_and_back(datatype: str) -> None:
    dtype = numpy_dtype(datatype)
    assert dtype == np.dtype(EXPECTED[datatype])
    assert v2_datatype(np.zeros(2, dtype=dtype)) == datatype


def test_unknown_datatype_is_invalid_input() -> None:
    with pytest.raises(InvalidInput, match="unknown datatype 'FP8'"):
        numpy_dtype("FP8")


@pytest.mark.parametrize(
    ("arr", "datatype"),
    [
        (np.array(["a", "b"]), "BYTES"),
        (np.array([b"a", b"b"]), "BYTES"),
        (np.array([b"a", "b"], dtype=object), "BYTES"),
        (np.zeros(2, dtype=">f4"), "FP32"),
        (np.zeros(2, dtype=">u2"), "UINT16"),
    ],
)
def test_v2_datatype_of_other_layouts(arr: np.ndarray, datatype: str) -> None:
    assert v2_datatype(arr) == datatype


@pytest.mark.parametrize("dtype", [np.complex64, "datetime64[s]", np.float128])
def test_v2_datatype_rejects_dtypes_without_a_datatype(dtype: Any) -> None:
    with pytest.raises(InvalidInput, match="has no v2 datatype"):
        v2_datatype(np.zeros(1, dtype=dtype))


def test_element_size() -> None:
    assert element_size("BOOL") == 1
    assert element_size("FP16") == 2
    assert element_size("BF16") == 2
    assert element_size("INT64") == 8
    assert element_size("BYTES") is None


def test_little_endian_swaps_only_big_endian() -> None:
    native = np.arange(3, dtype=np.float32)
    assert little_endian(native) is native
    swapped = little_endian(native.astype(">f4"))
    assert swapped.dtype.byteorder in "<="
    np.testing.assert_array_equal(swapped, native)


def test_array_from_json_shapes() -> None:
    flat = array_from_json("x", [1, 2, 3, 4, 5, 6], "INT32", [2, 3])
    nested = array_from_json("x", [[1, 2, 3], [4, 5, 6]], "INT32", [2, 3])
    np.testing.assert_array_equal(flat, nested)
    assert flat.shape == (2, 3)
    assert array_from_json("x", 7, "FP32", []).shape == ()
    assert array_from_json("x", [], "INT8", [0, 4]).dtype == np.int8
    assert array_from_json("x", [[1.5], [2.5]], "FP64").shape == (2, 1)
    strings = array_from_json("x", [["a", "b"], ["c", "é"]], "BYTES")
    assert strings.shape == (2, 2)
    assert strings[1, 1] == "é".encode()


def test_array_from_json_integer_extremes() -> None:
    big = array_from_json("x", [0, 2**64 - 1], "UINT64", [2])
    assert big.tolist() == [0, 2**64 - 1]
    small = array_from_json("x", [-(2**63), 2**63 - 1], "INT64", [2])
    assert small.tolist() == [-(2**63), 2**63 - 1]


def test_array_from_json_keeps_nan_and_inf() -> None:
    arr = array_from_json("x", [float("nan"), float("inf")], "FP16", [2])
    assert np.isnan(arr[0]) and np.isinf(arr[1])


@pytest.mark.parametrize(
    ("data", "datatype", "message"),
    [
        ([300], "UINT8", "value 300 does not fit UINT8"),
        ([-1], "UINT64", "value -1 does not fit UINT64"),
        ([2**64], "UINT64", "value 18446744073709551616 does not fit UINT64"),
        ([1, 2.0], "INT64", "INT64 data must be integers"),
        ([1.5], "INT32", "INT32 data must be integers"),
        (["1"], "FP32", "FP32 data must be numbers"),
        ([None], "FP32", "FP32 data must be numbers"),
        ([True], "FP32", "FP32 data must be numbers"),
        ([1e6], "FP16", "overflows FP16"),
        ([1e39], "BF16", "overflows BF16"),
        ([1], "BOOL", "BOOL data must be true or false"),
        ([1], "BYTES", "BYTES data must be strings, got number"),
        ([["a"], "b"], "BYTES", "not a rectangular"),
        ([[1, 2], [3]], "INT32", "not a rectangular"),
    ],
)
def test_array_from_json_rejects(data: Any, datatype: str, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        array_from_json("x", data, datatype)


def test_array_from_json_b64() -> None:
    arr = array_from_json("x", [{"b64": "AP8="}, "hi"], "BYTES", b64=True)
    assert arr.tolist() == [b"\x00\xff", b"hi"]
    with pytest.raises(InvalidInput, match="invalid base64"):
        array_from_json("x", [{"b64": "!!"}], "BYTES", b64=True)
    with pytest.raises(InvalidInput, match="got object"):
        array_from_json("x", [{"b64": "AP8="}], "BYTES")


def test_array_to_json() -> None:
    bf16 = np.array([[1.5, -2.0]], dtype=ml_dtypes.bfloat16)
    assert array_to_json("y", bf16, "BF16", flat=True) == [1.5, -2.0]
    assert array_to_json("y", bf16, "BF16", flat=False) == [[1.5, -2.0]]
    raw = np.array([b"ok", b"\xff"], dtype=object)
    assert array_to_json("y", raw, "BYTES", flat=True, b64=True) == [
        "ok",
        {"b64": "/w=="},
    ]
    with pytest.raises(InvalidInput, match="binary_data=true"):
        array_to_json("y", raw, "BYTES", flat=True)
    with pytest.raises(ModelError, match="BYTES element is int"):
        array_to_json("y", np.array([1], dtype=object), "BYTES", flat=True)
