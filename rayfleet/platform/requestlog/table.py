"""A version's logged requests as an Arrow table: the request log's columns.

One row per item of a request's batch (the first dimension every input and
output shares), so a day of log reads as a dataset, the way ``rayfleet
validate --data`` and ``rayfleet batch`` read any other:

=================  ==========================  =======================================
column             type                        what
=================  ==========================  =======================================
``request_id``     string                      the request's ``x-request-id``
``row``            int32                       the item's index in its request
``time``           timestamp[us, UTC]          when the router answered
``model``          string
``version``        string                      the version that answered
``status``         int32                       the HTTP status sent (200, or a 5xx)
``latency_ms``     float64                     the whole request at the router
``model_ms``       float64                     the runtime's share of it
``shadow_of``      string                      for a shadow copy: the primary version
``{input}``        number or list of numbers   each input, named as the signature
``output_{out}``   number or list of numbers   each output; null for a 5xx
=================  ==========================  =======================================

A tensor with one number per item is a column of numbers; any other is a list
column holding the item flattened (its shape is the signature's). That is how
``rayfleet batch`` reads a column named like a model input. FP16 and BF16 are
written as float32 (Parquet readers widely read neither), BYTES as binary.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from rayfleet.platform.config.signature import Signature, TensorSpec
from rayfleet.platform.errors import ConfigError
from rayfleet.platform.protocol.datatypes import numpy_dtype
from rayfleet.platform.requestlog.buffer import LoggedRequest

__all__ = [
    "LOG_COLUMNS",
    "OUTPUT_PREFIX",
    "LogLayout",
    "LogTensor",
    "output_column",
]

REQUEST_ID = "request_id"
ROW = "row"
TIME = "time"
MODEL = "model"
VERSION = "version"
STATUS = "status"
LATENCY_MS = "latency_ms"
MODEL_MS = "model_ms"
SHADOW_OF = "shadow_of"
OUTPUT_PREFIX = "output_"

_REQUEST_FIELDS = (
    pa.field(REQUEST_ID, pa.string(), nullable=False),
    pa.field(ROW, pa.int32(), nullable=False),
    pa.field(TIME, pa.timestamp("us", tz="UTC"), nullable=False),
    pa.field(MODEL, pa.string(), nullable=False),
    pa.field(VERSION, pa.string(), nullable=False),
    pa.field(STATUS, pa.int32(), nullable=False),
    pa.field(LATENCY_MS, pa.float64(), nullable=False),
    pa.field(MODEL_MS, pa.float64(), nullable=False),
    pa.field(SHADOW_OF, pa.string()),
)
LOG_COLUMNS: tuple[str, ...] = tuple(field.name for field in _REQUEST_FIELDS)
"""The columns every request log has, before its tensors."""

# Widened on the way in: Arrow has no bfloat16, and Parquet readers widely read
# no half floats.
_WIDENED = {"FP16": np.dtype("<f4"), "BF16": np.dtype("<f4")}


def output_column(name: str) -> str:
    """The log's column for the output called ``name``."""
    return OUTPUT_PREFIX + name


@dataclass(frozen=True)
class LogTensor:
    """How one input or output is written: its column, and what it holds."""

    spec: TensorSpec
    column: str
    dtype: np.dtype[Any]
    value_type: pa.DataType

    @property
    def scalar(self) -> bool:
        """One number per item: written as a column of numbers, not of lists."""
        return len(self.spec.shape) == 1

    @property
    def arrow_type(self) -> pa.DataType:
        """The column's type."""
        return self.value_type if self.scalar else pa.list_(self.value_type)

    def values(self, array: np.ndarray) -> np.ndarray:
        """``array`` in the dtype its column stores."""
        return array.astype(self.dtype, copy=False)


def _tensor(spec: TensorSpec, column: str) -> LogTensor:
    if spec.datatype == "BYTES":
        return LogTensor(spec, column, np.dtype(object), pa.binary())
    dtype = _WIDENED.get(spec.datatype, numpy_dtype(spec.datatype))
    return LogTensor(spec, column, dtype, pa.from_numpy_dtype(dtype))


@dataclass(frozen=True)
class LogLayout:
    """The request log's columns for one version's signature."""

    inputs: tuple[LogTensor, ...]
    outputs: tuple[LogTensor, ...]

    @classmethod
    def of(cls, signature: Signature) -> LogLayout:
        """The layout for ``signature``; :class:`ConfigError` when a tensor's
        column would take a name already used (an input called ``status``)."""
        inputs = tuple(_tensor(spec, spec.name) for spec in signature.inputs)
        outputs = tuple(
            _tensor(spec, output_column(spec.name)) for spec in signature.outputs
        )
        names = [*LOG_COLUMNS, *(t.column for t in (*inputs, *outputs))]
        clashes = sorted({name for name in names if names.count(name) > 1})
        if clashes:
            raise ConfigError(
                f"the request log cannot name a column for tensor(s) {clashes}: "
                f"the log's own columns are {list(LOG_COLUMNS)}, and outputs are "
                f"written as {OUTPUT_PREFIX}<name>"
            )
        return cls(inputs, outputs)

    @property
    def schema(self) -> pa.Schema:
        """Every column, in order."""
        tensors = [pa.field(t.column, t.arrow_type) for t in self.inputs]
        tensors += [pa.field(t.column, t.arrow_type) for t in self.outputs]
        return pa.schema([*_REQUEST_FIELDS, *tensors])

    def rows_of(
        self,
        inputs: Mapping[str, np.ndarray],
        outputs: Mapping[str, np.ndarray] | None,
    ) -> int | None:
        """The batch size every logged tensor shares; ``None`` when they share
        none (a 0-d tensor, or first dimensions that differ), or an input is
        missing."""
        rows = None
        tensors: list[np.ndarray | None] = [
            inputs.get(t.spec.name) for t in self.inputs
        ]
        if outputs is not None:
            tensors += [outputs.get(t.spec.name) for t in self.outputs]
        for index, array in enumerate(tensors):
            if array is None:
                if index < len(self.inputs):
                    return None
                continue  # an output the model did not return is written null
            if array.ndim == 0:
                return None
            if rows is None:
                rows = array.shape[0]
            elif array.shape[0] != rows:
                return None
        return rows

    def to_table(self, entries: Sequence[LoggedRequest]) -> pa.Table:
        """The rows of ``entries``, requests of this layout's version, in order."""
        counts = np.fromiter((e.rows for e in entries), dtype=np.int64)
        total = int(counts.sum())
        starts = np.cumsum(counts) - counts

        def each(values: Sequence[Any], dtype: Any = None) -> np.ndarray:
            return np.repeat(np.asarray(values, dtype=dtype), counts)

        times_us = each([round(e.time * 1_000_000) for e in entries], np.int64)
        columns: list[pa.Array] = [
            pa.array(each([e.request_id for e in entries], object), pa.string()),
            pa.array(np.arange(total) - np.repeat(starts, counts), pa.int32()),
            pa.array(times_us, pa.timestamp("us", tz="UTC")),
            pa.array(each([e.model for e in entries], object), pa.string()),
            pa.array(each([e.version for e in entries], object), pa.string()),
            pa.array(each([e.status for e in entries]), pa.int32()),
            pa.array(each([e.latency_ms for e in entries]), pa.float64()),
            pa.array(each([e.model_ms for e in entries]), pa.float64()),
            pa.array(each([e.shadow_of for e in entries], object), pa.string()),
        ]
        for tensor in self.inputs:
            arrays = [e.inputs.get(tensor.spec.name) for e in entries]
            columns.append(_column(tensor, arrays, counts))
        for tensor in self.outputs:
            found = [
                None if e.outputs is None else e.outputs.get(tensor.spec.name)
                for e in entries
            ]
            columns.append(_column(tensor, found, counts))
        return pa.Table.from_arrays(columns, schema=self.schema)


def _column(
    tensor: LogTensor, arrays: Sequence[np.ndarray | None], counts: np.ndarray
) -> pa.Array:
    """One tensor of many requests as one column; a missing tensor's rows null."""
    missing = np.fromiter((a is None for a in arrays), dtype=bool, count=len(arrays))
    present = [
        tensor.values(a).reshape(rows, -1)
        for a, rows in zip(arrays, counts, strict=True)
        if a is not None
    ]
    # Each request's width: the numbers one item holds (fixed by the signature
    # unless a dimension is -1), zero for a missing tensor.
    widths = np.zeros(len(arrays), dtype=np.int64)
    widths[~missing] = [block.shape[1] for block in present]
    flat = (
        np.concatenate([block.reshape(-1) for block in present])
        if present
        else np.zeros(0, dtype=tensor.dtype)
    )
    values = pa.array(flat, tensor.value_type)
    row_missing = np.repeat(missing, counts)
    if tensor.scalar:
        if not row_missing.any():
            return values
        # Put each present value in its row, the missing rows null.
        index = np.full(len(row_missing), -1, dtype=np.int64)
        index[~row_missing] = np.arange(len(flat))
        return values.take(pa.array(index, mask=row_missing))
    offsets = np.zeros(len(row_missing) + 1, dtype=np.int32)
    np.cumsum(np.repeat(widths, counts), out=offsets[1:])
    mask = pa.array(row_missing) if row_missing.any() else None
    return pa.ListArray.from_arrays(
        pa.array(offsets, pa.int32()), values, type=tensor.arrow_type, mask=mask
    )
