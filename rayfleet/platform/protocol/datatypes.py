"""KServe v2 tensor datatypes, their numpy dtypes, and JSON tensor values.

Fixed-size datatypes map to little-endian numpy dtypes (the v2 binary extension is
little-endian); BF16 maps to ``ml_dtypes.bfloat16``; BYTES maps to an object array
whose elements are ``bytes``.

The JSON helpers are shared by the v2 and v1 codecs. They are strict: a value that
does not fit its datatype (300 for UINT8, 1.5 for INT32, a string for FP32, a number
for BYTES) is an :class:`InvalidInput`, never a silent cast.
"""

from __future__ import annotations

import base64
import binascii
import math
import sys
from collections.abc import Sequence
from typing import Any, Final

import ml_dtypes
import numpy as np

from rayfleet.platform.errors import InvalidInput, ModelError
from rayfleet.platform.protocol.limits import check_shape

__all__ = [
    "DATATYPES",
    "array_from_json",
    "array_to_json",
    "element_size",
    "little_endian",
    "numpy_dtype",
    "v2_datatype",
]

_DTYPES: Final[dict[str, np.dtype[Any]]] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype("<u1"),
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
    "INT8": np.dtype("<i1"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "FP16": np.dtype("<f2"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
    "BF16": np.dtype(ml_dtypes.bfloat16),
    "BYTES": np.dtype(np.object_),
}

DATATYPES: Final[tuple[str, ...]] = tuple(_DTYPES)
"""Every v2 datatype name, in the order the v2 specification lists them."""

_BF16: Final = _DTYPES["BF16"]

# Keyed by (kind, itemsize) so that byte order does not matter: a big-endian float32
# array is still FP32 (the encoders swap it to little-endian when writing bytes).
_BY_KIND: Final[dict[tuple[str, int], str]] = {
    (dtype.kind, dtype.itemsize): name
    for name, dtype in _DTYPES.items()
    if dtype.kind in "biuf"
}

_JSON_TYPE_NAMES: Final[dict[type, str]] = {
    bool: "boolean",
    int: "number",
    float: "number",
    str: "string",
    list: "array",
    dict: "object",
    type(None): "null",
}


def numpy_dtype(datatype: str) -> np.dtype[Any]:
    """The numpy dtype that carries v2 ``datatype``; InvalidInput if it is unknown."""
    try:
        return _DTYPES[datatype]
    except (KeyError, TypeError):
        raise InvalidInput(
            f"unknown datatype {datatype!r}; expected one of {', '.join(DATATYPES)}"
        ) from None


def v2_datatype(arr: np.ndarray) -> str:
    """The v2 datatype of ``arr``: object, str and bytes arrays are all BYTES.

    Raises InvalidInput for dtypes no v2 datatype carries (complex, datetime, ...).
    Object arrays are not scanned here; the encoders check each element.
    """
    dtype = arr.dtype
    if dtype == _BF16:
        return "BF16"
    if dtype.kind in "OSU":
        return "BYTES"
    try:
        return _BY_KIND[(dtype.kind, dtype.itemsize)]
    except KeyError:
        raise InvalidInput(f"numpy dtype {dtype} has no v2 datatype") from None


def element_size(datatype: str) -> int | None:
    """Bytes per element of ``datatype`` in binary form; None for BYTES (variable)."""
    if datatype == "BYTES":
        return None
    return numpy_dtype(datatype).itemsize


def little_endian(arr: np.ndarray) -> np.ndarray:
    """``arr`` itself when its bytes are little-endian already, else a swapped copy."""
    order = arr.dtype.byteorder
    if order == ">" or (order == "=" and sys.byteorder == "big"):
        return arr.astype(arr.dtype.newbyteorder("<"))
    return arr


def array_from_json(
    name: str,
    data: object,
    datatype: str,
    shape: Sequence[int] | None = None,
    *,
    b64: bool = False,
) -> np.ndarray:
    """Convert the JSON ``data`` of input ``name`` to an array of ``datatype``.

    ``data`` may be a scalar, a flat list or a nested (rectangular) list, row-major.
    With ``shape`` the element count must equal its product and the result takes
    that shape; without it the shape is the nesting of ``data``. BYTES elements are
    strings (sent as their UTF-8 bytes) or, when ``b64`` is set, TF-Serving style
    ``{"b64": "..."}`` objects.

    Numeric data is typed by numpy's inference over the whole list, so a boolean
    among integers passes as 0 or 1; all-boolean data for a number is refused.
    """
    dtype = numpy_dtype(datatype)
    if datatype == "BYTES":
        leaves, found_shape = _flatten(name, data)
        arr = np.empty(len(leaves), dtype=object)
        for i, leaf in enumerate(leaves):
            arr[i] = _bytes_from_json(name, leaf, b64)
    else:
        try:
            raw = np.array(data)
        except (ValueError, TypeError) as e:
            raise InvalidInput(
                f"input {name!r}: data is not a rectangular nested list of values"
            ) from e
        found_shape = raw.shape
        arr = _cast_json_numbers(name, data, raw, datatype, dtype)
    if shape is None:
        # Nesting gives the shape here, so it is checked as a declared one is.
        return arr.reshape(check_shape(f"input {name!r}", found_shape, dtype.itemsize))
    needed = math.prod(shape)
    if arr.size != needed:
        raise InvalidInput(
            f"input {name!r}: data holds {arr.size} elements "
            f"but shape {list(shape)} needs {needed}"
        )
    return arr.reshape(tuple(shape))


def array_to_json(
    name: str, arr: np.ndarray, datatype: str, *, flat: bool, b64: bool = False
) -> Any:
    """The JSON value of output ``name``: a flat row-major list, or nested lists.

    FP16 and BF16 become floats. BYTES elements become strings when they are valid
    UTF-8. Other bytes are lossy as JSON strings, so they become ``{"b64": ...}``
    objects when ``b64`` is set (TF-Serving style) and an InvalidInput otherwise,
    telling the client to ask for binary data instead.
    """
    if datatype == "BYTES":
        strings = np.empty(arr.size, dtype=object)
        for i, element in enumerate(arr.reshape(-1)):
            strings[i] = _bytes_to_json(name, element, b64)
        values = strings.reshape(arr.shape)
    elif datatype == "BF16":
        # tolist() on bfloat16 yields bfloat16 scalars, which json cannot write.
        values = arr.astype(np.float32)
    else:
        values = arr
    return values.reshape(-1).tolist() if flat else values.tolist()


def _flatten(name: str, data: object) -> tuple[list[Any], tuple[int, ...]]:
    """Leaves of a rectangular nested list, row-major, and its shape."""
    if not isinstance(data, list):
        return [data], ()
    shape: list[int] = []
    level: list[Any] = [data]
    # Walk one nesting level at a time so each level is checked for raggedness.
    while level and isinstance(level[0], list):
        width = len(level[0])
        if any(not isinstance(item, list) or len(item) != width for item in level):
            raise InvalidInput(
                f"input {name!r}: data is not a rectangular nested list of values"
            )
        shape.append(width)
        level = [leaf for item in level for leaf in item]
    if any(isinstance(item, list) for item in level):
        raise InvalidInput(
            f"input {name!r}: data is not a rectangular nested list of values"
        )
    return level, tuple(shape)


def _bytes_from_json(name: str, value: object, b64: bool) -> bytes:
    if isinstance(value, str):
        try:
            return value.encode("utf-8")
        except UnicodeEncodeError as e:
            raise InvalidInput(
                f"input {name!r}: BYTES string is not encodable as UTF-8"
            ) from e
    if b64 and isinstance(value, dict) and value.keys() == {"b64"}:
        encoded = value["b64"]
        if isinstance(encoded, str):
            try:
                return base64.b64decode(encoded, validate=True)
            except (binascii.Error, ValueError) as e:
                raise InvalidInput(f"input {name!r}: invalid base64 in 'b64'") from e
    expected = "strings or {'b64': ...} objects" if b64 else "strings"
    raise InvalidInput(
        f"input {name!r}: BYTES data must be {expected}, got {_json_type(value)}"
    )


def _bytes_to_json(name: str, element: object, b64: bool) -> Any:
    if isinstance(element, str):
        return element
    if not isinstance(element, bytes):
        raise ModelError(
            f"output {name!r}: BYTES element is {type(element).__name__}, "
            "not bytes or str"
        )
    try:
        return element.decode("utf-8")
    except UnicodeDecodeError:
        if b64:
            return {"b64": base64.b64encode(element).decode("ascii")}
        raise InvalidInput(
            f"output {name!r} holds bytes that are not valid UTF-8 and cannot be "
            "sent as JSON; request it with binary_data=true"
        ) from None


def _cast_json_numbers(
    name: str, data: object, raw: np.ndarray, datatype: str, dtype: np.dtype[Any]
) -> np.ndarray:
    """``raw``, numpy's own inference from JSON ``data``, checked and cast."""
    if raw.size == 0:
        # An empty list infers as float64, which says nothing about the values.
        return np.empty(raw.shape, dtype=dtype)
    kind = raw.dtype.kind
    if datatype == "BOOL":
        if kind != "b":
            raise InvalidInput(f"input {name!r}: BOOL data must be true or false")
        return raw
    if dtype.kind in "iu":
        if kind in "iu":
            low, high = int(raw.min()), int(raw.max())
        elif kind in "fO":
            # numpy infers float64 for ints that need uint64 next to ones that
            # need int64, and object beyond 64 bits; recheck the JSON values.
            return _exact_integers(name, data, datatype, dtype)
        else:
            raise InvalidInput(f"input {name!r}: {datatype} data must be integers")
        _check_range(name, low, high, datatype, dtype)
        return raw.astype(dtype)
    if kind not in "iuf":
        raise InvalidInput(f"input {name!r}: {datatype} data must be numbers")
    with np.errstate(over="ignore"):
        cast = raw.astype(dtype)
    overflowed = np.isinf(cast) & ~np.isinf(raw) if kind == "f" else np.isinf(cast)
    if overflowed.any():
        bad = raw.reshape(-1)[int(np.argmax(overflowed.reshape(-1)))]
        raise InvalidInput(f"input {name!r}: value {bad} overflows {datatype}")
    return cast


def _exact_integers(
    name: str, data: object, datatype: str, dtype: np.dtype[Any]
) -> np.ndarray:
    leaves, shape = _flatten(name, data)
    for leaf in leaves:
        # An integer past 64 bits arrives as the float the JSON reader made of
        # it (protocol.jsonio): out of range, rather than not an integer.
        if type(leaf) is float and leaf.is_integer():
            _check_range(name, leaf, leaf, datatype, dtype)
    # type() rather than isinstance() so that booleans are not taken as integers.
    if any(type(leaf) is not int for leaf in leaves):
        raise InvalidInput(f"input {name!r}: {datatype} data must be integers")
    _check_range(name, min(leaves), max(leaves), datatype, dtype)
    return np.array(leaves, dtype=dtype).reshape(shape)


def _check_range(
    name: str, low: float, high: float, datatype: str, dtype: np.dtype[Any]
) -> None:
    info = np.iinfo(dtype)
    if low < info.min or high > info.max:
        bad = low if low < info.min else high
        raise InvalidInput(
            f"input {name!r}: value {bad} does not fit {datatype} "
            f"[{info.min}, {info.max}]"
        )


def _json_type(value: object) -> str:
    return _JSON_TYPE_NAMES.get(type(value), type(value).__name__)
