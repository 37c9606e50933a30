"""Arrow IPC stream codec (Content-Type ``application/vnd.apache.arrow.stream``).

Convention, for requests and responses alike:

* The body is an IPC stream holding exactly one record batch. Each column is one
  tensor, named by its field; the batch's rows are axis 0 of every tensor, so all
  tensors in one body share their first dimension, and a 0-d tensor cannot be sent.
* A column of a primitive type is a 1-D tensor ``(rows,)``. A column of fixed-size
  lists is ``(rows, size)``, and fixed-size lists nested k deep give a tensor of
  k + 1 dimensions ``(rows, size_1, ..., size_k)``; this is how tensors are encoded.
* Decoding also accepts a per-row shape given explicitly: field metadata ``shape``
  (a JSON list of ints, e.g. ``[3, 8, 8]``) over fixed-size lists holding the same
  number of elements per row, or Arrow's canonical ``arrow.fixed_shape_tensor``
  extension type. The tensor is then ``(rows, *shape)``.
* Binary and string columns (plain, large or view) are BYTES; strings are taken as
  their UTF-8 bytes. Arrow has no bfloat16, so BF16 travels as uint16 with field
  metadata ``datatype`` = ``"BF16"``. The encoders write ``datatype`` on every field;
  when present it must agree with the column's Arrow type.
* Tensors have no nulls, so a null at any nesting level is rejected.
* Compressed bodies (LZ4 or ZSTD buffers) are read only when their buffers'
  uncompressed sizes, plus what BOOL and BYTES columns take as numpy arrays, fit
  ``max_decoded_bytes`` (:mod:`.arrow_sizes`); shapes pass :mod:`.limits`.
* Schema metadata carries ``id`` on requests, and ``model_name``,
  ``model_version`` and (when set) ``id`` on responses.

Decoding does not copy fixed-width columns: each array is a read-only view of the
body (bit-packed BOOL columns and BYTES columns are necessarily converted).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any, Final, Literal

import ml_dtypes
import numpy as np
import pyarrow as pa

from rayfleet.platform.errors import InvalidInput, ModelError, RayfleetError
from rayfleet.platform.protocol.arrow_sizes import stream_decoded_bytes
from rayfleet.platform.protocol.datatypes import little_endian, v2_datatype
from rayfleet.platform.protocol.limits import (
    DEFAULT_MAX_DECODED_BYTES,
    MAX_RANK,
    check_decoded_bytes,
    check_shape,
    decoded_bytes,
)
from rayfleet.platform.protocol.types import InferRequest, InferResponse

__all__ = [
    "ARROW_CONTENT_TYPE",
    "ArrowDirection",
    "decode_arrow_request",
    "encode_arrow_response",
    "read_arrow_stream",
    "write_arrow_stream",
]

ARROW_CONTENT_TYPE: Final = "application/vnd.apache.arrow.stream"

ArrowDirection = Literal["request", "response"]
"""Which way a body travels: a request holds inputs, a response outputs."""

_TENSOR: Final[dict[str, str]] = {"request": "input", "response": "output"}
_ENCODE_ERROR: Final[dict[str, type[RayfleetError]]] = {
    "request": InvalidInput,
    "response": ModelError,
}

_ARROW_TO_V2: Final[dict[Any, str]] = {
    pa.bool_(): "BOOL",
    pa.uint8(): "UINT8",
    pa.uint16(): "UINT16",
    pa.uint32(): "UINT32",
    pa.uint64(): "UINT64",
    pa.int8(): "INT8",
    pa.int16(): "INT16",
    pa.int32(): "INT32",
    pa.int64(): "INT64",
    pa.float16(): "FP16",
    pa.float32(): "FP32",
    pa.float64(): "FP64",
}

_BYTES_TYPES: Final = (
    pa.types.is_binary,
    pa.types.is_large_binary,
    pa.types.is_binary_view,
    pa.types.is_string,
    pa.types.is_large_string,
    pa.types.is_string_view,
)


def decode_arrow_request(
    body: bytes, *, max_decoded_bytes: int = DEFAULT_MAX_DECODED_BYTES
) -> InferRequest:
    """Decode an Arrow IPC request: one input per column (see the module docstring).

    PayloadTooLarge when its inputs decode to more than ``max_decoded_bytes``,
    raised before the buffers are decompressed.
    """
    inputs, datatypes, metadata = read_arrow_stream(
        body, "request", max_decoded_bytes=max_decoded_bytes
    )
    request_id = metadata.get(b"id")
    return InferRequest(
        inputs=inputs,
        datatypes=datatypes,
        id=None if request_id is None else request_id.decode("utf-8", "replace"),
    )


def encode_arrow_response(response: InferResponse) -> bytes:
    """Encode every output of ``response`` as an Arrow IPC stream.

    Raises ModelError when the outputs cannot form one record batch (a 0-d output,
    differing first dimensions, or a dtype no v2 datatype carries).
    """
    metadata = {
        b"model_name": response.model_name.encode("utf-8"),
        b"model_version": response.model_version.encode("utf-8"),
    }
    if response.id is not None:
        metadata[b"id"] = response.id.encode("utf-8")
    return write_arrow_stream(response.outputs, metadata, "response")


def read_arrow_stream(
    body: bytes,
    direction: ArrowDirection,
    *,
    max_decoded_bytes: int = DEFAULT_MAX_DECODED_BYTES,
) -> tuple[dict[str, np.ndarray], dict[str, str], dict[bytes, bytes]]:
    """The tensors of an Arrow IPC ``body``: arrays and v2 datatypes by name, and
    the schema metadata.

    ``direction`` says whether ``body`` is a request or a response, for the
    wording of the InvalidInput raised when it breaks the convention. Tensors that
    decode to more than ``max_decoded_bytes`` raise PayloadTooLarge before the
    memory is taken.
    """
    what = _TENSOR[direction]
    decoded = stream_decoded_bytes(body, direction)
    check_decoded_bytes(f"Arrow {direction}", decoded, max_decoded_bytes)
    batch = _read_batch(body, direction)
    arrays, datatypes = _batch_to_arrays(
        batch, what, _Budget(decoded, max_decoded_bytes)
    )
    return arrays, datatypes, dict(batch.schema.metadata or {})


def write_arrow_stream(
    arrays: Mapping[str, np.ndarray],
    metadata: Mapping[bytes, bytes],
    direction: ArrowDirection,
) -> bytes:
    """``arrays`` as an Arrow IPC stream of one record batch, one column each,
    with ``metadata`` on the schema.

    Arrays that cannot form one batch (a 0-d array, differing first dimensions, a
    dtype no v2 datatype carries) raise InvalidInput for a request, since the
    caller built it, and ModelError for a response, since a model produced it.
    """
    what = _TENSOR[direction]
    error = _ENCODE_ERROR[direction]
    rows: int | None = None
    columns: list[Any] = []
    fields: list[Any] = []
    for name, arr in arrays.items():
        if arr.ndim == 0:
            raise error(
                f"{what} {name!r} is 0-d; Arrow columns need a leading batch axis"
            )
        if rows is None:
            rows = arr.shape[0]
        elif arr.shape[0] != rows:
            raise error(
                f"{what}s differ in their first dimension ({rows} and "
                f"{arr.shape[0]} for {name!r}); one Arrow record batch needs one"
            )
        column, field = _array_to_column(name, arr, what, error)
        columns.append(column)
        fields.append(field)
    schema = pa.schema(fields, metadata=dict(metadata))
    batch = pa.RecordBatch.from_arrays(columns, schema=schema)
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, schema) as writer:
        writer.write_batch(batch)
    result: bytes = sink.getvalue().to_pybytes()
    return result


def _read_batch(body: bytes, what: str) -> Any:
    try:
        # py_buffer wraps the body without copying, so columns can be views of it.
        batches = list(pa.ipc.open_stream(pa.py_buffer(body)))
    except (pa.ArrowException, OSError) as e:
        raise InvalidInput(f"{what} body is not an Arrow IPC stream: {e}") from e
    if len(batches) != 1:
        raise InvalidInput(
            f"Arrow {what} must hold exactly one record batch, got {len(batches)}"
        )
    try:
        # Reading trusts the sizes and offsets the client wrote; checking them
        # keeps a corrupt body from reading past its buffers.
        batches[0].validate(full=True)
    except pa.ArrowException as e:
        raise InvalidInput(f"Arrow {what} is malformed: {e}") from e
    return batches[0]


class _Budget:
    """The decoded bytes a stream may still take, spent column by column."""

    def __init__(self, spent: int, limit: int) -> None:
        self.spent = spent
        self.limit = limit

    def spend(self, label: str, size: int) -> None:
        self.spent += size
        check_decoded_bytes(label, self.spent, self.limit)


def _batch_to_arrays(
    batch: Any, what: str, budget: _Budget
) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    try:
        # Field names are decoded lazily, so a name that is not UTF-8 fails here.
        names: list[str] = batch.schema.names
    except UnicodeDecodeError as e:
        raise InvalidInput(f"an Arrow {what} name is not valid UTF-8") from e
    arrays: dict[str, np.ndarray] = {}
    datatypes: dict[str, str] = {}
    for name, field, column in zip(names, batch.schema, batch.columns, strict=True):
        if name in arrays:
            raise InvalidInput(f"{what} {name!r} appears more than once")
        arrays[name], datatypes[name] = _column_to_array(field, column, what, budget)
    return arrays, datatypes


def _column_to_array(
    field: Any, column: Any, what: str, budget: _Budget
) -> tuple[np.ndarray, str]:
    label = f"{what} {field.name!r}"
    metadata = field.metadata or {}
    row_shape_hint = _metadata_shape(label, metadata)
    storage = column
    if isinstance(column.type, pa.FixedShapeTensorType):
        permutation = column.type.permutation
        if permutation is not None and list(permutation) != sorted(permutation):
            raise InvalidInput(f"{label}: permuted fixed_shape_tensor is unsupported")
        if row_shape_hint is None:
            row_shape_hint = list(column.type.shape)
        storage = column.storage
    elif isinstance(column.type, pa.BaseExtensionType):
        raise InvalidInput(
            f"{label}: Arrow extension type {column.type} is unsupported"
        )

    row_shape: list[int] = []
    values = storage
    while pa.types.is_fixed_size_list(values.type):
        if values.null_count:
            raise InvalidInput(f"{label} has null values")
        row_shape.append(values.type.list_size)
        if len(row_shape) >= MAX_RANK:
            raise InvalidInput(
                f"{label}: fixed-size lists nest over {MAX_RANK - 1} deep; at most "
                f"{MAX_RANK} dimensions are allowed"
            )
        # flatten(), unlike .values, honours the array's offset and length.
        values = values.flatten()
    if values.null_count:
        raise InvalidInput(f"{label} has null values")
    budget.spend(label, _materialized_bytes(values))
    flat, datatype = _values_to_numpy(label, values, metadata)

    if row_shape_hint is not None:
        if math.prod(row_shape_hint) != math.prod(row_shape):
            raise InvalidInput(
                f"{label}: metadata shape {row_shape_hint} does not match the "
                f"{math.prod(row_shape)} elements per row of its Arrow type"
            )
        row_shape = row_shape_hint
    shape = check_shape(label, (len(column), *row_shape), flat.dtype.itemsize)
    return flat.reshape(shape), datatype


def _metadata_shape(label: str, metadata: Mapping[bytes, bytes]) -> list[int] | None:
    raw = metadata.get(b"shape")
    if raw is None:
        return None
    try:
        shape = json.loads(raw)
    except (ValueError, RecursionError) as e:
        raise InvalidInput(f"{label}: metadata shape is not valid JSON") from e
    if not isinstance(shape, list) or any(
        isinstance(dim, bool) or not isinstance(dim, int) or dim < 0 for dim in shape
    ):
        raise InvalidInput(
            f"{label}: metadata shape must be a list of non-negative integers"
        )
    # The rows are one more dimension in front of the per-row shape; the whole
    # shape is checked once the rows are known.
    if len(shape) >= MAX_RANK:
        raise InvalidInput(
            f"{label}: metadata shape has {len(shape)} dimensions; with the rows, "
            f"at most {MAX_RANK} are allowed"
        )
    return list(check_shape(f"{label} metadata", shape, 1))


def _materialized_bytes(values: Any) -> int:
    """What converting flat ``values`` to numpy allocates beyond Arrow's buffers:
    BOOL unpacks bits to bytes, BYTES makes one Python object per element."""
    if pa.types.is_boolean(values.type):
        return len(values)
    if any(is_bytes(values.type) for is_bytes in _BYTES_TYPES):
        payload: int = values.nbytes
        return decoded_bytes((len(values),), None) + payload
    return 0


def _values_to_numpy(
    label: str, values: Any, metadata: Mapping[bytes, bytes]
) -> tuple[np.ndarray, str]:
    value_type = values.type
    if any(is_bytes(value_type) for is_bytes in _BYTES_TYPES):
        datatype = "BYTES"
        flat = values.cast(pa.large_binary()).to_numpy(zero_copy_only=False)
    else:
        found = _ARROW_TO_V2.get(value_type)
        if found is None:
            raise InvalidInput(f"{label}: Arrow type {value_type} has no v2 datatype")
        datatype = found
        # Arrow packs booleans into bits, so only BOOL needs a conversion.
        flat = values.to_numpy(zero_copy_only=datatype != "BOOL")
    declared_raw = metadata.get(b"datatype")
    if declared_raw is not None:
        declared = declared_raw.decode("utf-8", "replace")
        if declared == "BF16" and datatype == "UINT16":
            return flat.view(ml_dtypes.bfloat16), "BF16"
        if declared != datatype:
            raise InvalidInput(
                f"{label}: metadata datatype {declared!r} does not match "
                f"Arrow type {value_type}"
            )
    return flat, datatype


def _array_to_column(
    name: str, arr: np.ndarray, what: str, error: type[RayfleetError]
) -> tuple[Any, Any]:
    try:
        datatype = v2_datatype(arr)
    except InvalidInput as e:
        raise error(f"{what} {name!r}: {e.message}") from None
    flat = np.ascontiguousarray(little_endian(arr)).reshape(-1)
    if datatype == "BYTES":
        values = _bytes_values(name, flat, what, error)
    elif datatype == "BF16":
        values = pa.array(flat.view(np.uint16))
    else:
        values = pa.array(flat)
    # Wrap innermost dimension first; from_buffers (unlike from_arrays) also copes
    # with zero-sized dimensions, where the row count cannot be inferred.
    for depth in range(arr.ndim - 1, 0, -1):
        values = pa.Array.from_buffers(
            pa.list_(values.type, arr.shape[depth]),
            math.prod(arr.shape[:depth]),
            [None],
            children=[values],
        )
    field = pa.field(
        name,
        values.type,
        nullable=False,
        metadata={b"datatype": datatype.encode("ascii")},
    )
    return values, field


def _bytes_values(
    name: str, flat: np.ndarray, what: str, error: type[RayfleetError]
) -> Any:
    if flat.dtype.kind == "U":
        # pyarrow would write numpy unicode as latin-1; Python str goes out as UTF-8.
        flat = flat.astype(object)
    try:
        values = pa.array(flat, type=pa.large_binary())
    except (pa.ArrowException, UnicodeEncodeError) as e:
        raise error(f"{what} {name!r}: BYTES elements must be bytes or str") from e
    if values.null_count:
        raise error(f"{what} {name!r}: BYTES elements must not be None")
    return values
