"""Table columns to model tensors and back, one batch at a time.

Numbers are cast to the input's datatype; a fraction meant for an integer input
is a bad row, not a silent truncation. Text columns are parsed per row. Each
output becomes one column: a number per row, or a fixed-size list (nested for
more dimensions), e.g. ``label`` int64 and ``probabilities`` list of 10 float.

A value that cannot feed the model (a null, a list of the wrong length, text that
is not a number) flags its row in :class:`Verdicts` with the reason; the row's
tensor holds zeros and never reaches the model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from rayfleet.platform.config.signature import TensorSpec
from rayfleet.platform.errors import ConfigError
from rayfleet.platform.protocol.datatypes import numpy_dtype

__all__ = [
    "InputBinding",
    "Verdicts",
    "arrow_type",
    "column_kind",
    "output_column",
    "read_input",
]


@dataclass(frozen=True)
class InputBinding:
    """Where one model input comes from in the table.

    ``columns`` are scalar columns stacked in order, or (``list_column``) one
    column holding a list of numbers per row. ``shape`` is one row's shape: the
    input's dimensions after the batch dimension.
    """

    name: str
    datatype: str
    shape: tuple[int, ...]
    columns: tuple[str, ...]
    list_column: bool

    @property
    def width(self) -> int:
        """Numbers per row."""
        return math.prod(self.shape)


def arrow_type(spec: TensorSpec) -> pa.DataType:
    """One row of ``spec`` in Arrow: a number, or nested fixed-size lists."""
    try:
        kind = pa.from_numpy_dtype(numpy_dtype(spec.datatype))
    except (pa.ArrowNotImplementedError, TypeError) as error:
        raise ConfigError(
            f"tensor {spec.name!r}: batch scoring cannot store {spec.datatype}"
        ) from error
    for size in reversed(spec.shape[1:]):
        kind = pa.list_(kind, size)
    return kind


def column_kind(kind: pa.DataType) -> str | None:
    """``number``, ``text`` or ``list`` (of numbers): what a column can feed."""
    t = pa.types
    if t.is_integer(kind) or t.is_floating(kind) or t.is_boolean(kind):
        return "number"
    if t.is_decimal(kind) or t.is_null(kind):
        return "number"
    if t.is_string(kind) or t.is_large_string(kind):
        return "text"
    if t.is_list(kind) or t.is_large_list(kind) or t.is_fixed_size_list(kind):
        return "list" if column_kind(kind.value_type) == "number" else None
    return None


class Verdicts:
    """The first problem found with each row of a batch."""

    def __init__(self, rows: int) -> None:
        self.bad = np.zeros(rows, dtype=bool)
        self.reasons = np.full(rows, None, dtype=object)

    def flag(self, mask: np.ndarray, reason: str) -> None:
        """Mark the rows ``mask`` selects, keeping an earlier reason."""
        fresh = mask & ~self.bad
        self.reasons[fresh] = reason
        self.bad |= mask

    def flag_row(self, row: int, reason: str) -> None:
        """Mark one row, unless it already has a reason."""
        if not self.bad[row]:
            self.reasons[row] = reason
            self.bad[row] = True


def _cast(raw: np.ndarray, dtype: np.dtype[Any]) -> tuple[np.ndarray, np.ndarray]:
    """``raw`` as ``dtype``, and where that would change a value: a fraction,
    infinity or out-of-range number meant for an integer input."""
    lossy = np.zeros(raw.shape, dtype=bool)
    if dtype.kind in "iu" and raw.dtype.kind == "f":
        limits = np.iinfo(dtype)
        with np.errstate(invalid="ignore"):
            lossy = ~np.isfinite(raw) | (raw != np.round(raw))
            lossy |= (raw < limits.min) | (raw > limits.max)
        raw = np.where(lossy, 0, raw)
    return raw.astype(dtype, copy=False), lossy


def _scalars(
    column: pa.ChunkedArray, name: str, dtype: np.dtype[Any], verdicts: Verdicts
) -> np.ndarray:
    rows = len(column)
    kind = column_kind(column.type)
    if kind == "text":
        raw = np.zeros(rows)
        for row, text in enumerate(column.to_pylist()):
            try:
                raw[row] = float(text)
            except TypeError:
                verdicts.flag_row(row, f"null in column {name!r}")
            except ValueError:
                verdicts.flag_row(row, f"{text!r} in column {name!r} is not a number")
    elif kind == "number":
        raw = column.to_numpy()
        if column.null_count:
            nulls = column.is_null().to_numpy()
            verdicts.flag(nulls, f"null in column {name!r}")
            raw = np.where(nulls, 0, raw)
        if raw.dtype == object:  # decimals, or booleans with nulls
            raw = raw.astype(np.float64)
    else:
        verdicts.flag(np.ones(rows, dtype=bool), f"column {name!r} holds {column.type}")
        return np.zeros(rows, dtype=dtype)
    values, lossy = _cast(raw, dtype)
    for index in np.flatnonzero(lossy):
        verdicts.flag_row(int(index), f"{raw[index]} in column {name!r} is no integer")
    return values


def _list_values(
    column: pa.ChunkedArray, binding: InputBinding, verdicts: Verdicts
) -> np.ndarray:
    rows, width, name = len(column), binding.width, binding.columns[0]
    dtype = numpy_dtype(binding.datatype)
    values = np.zeros((rows, width), dtype=dtype)
    if column_kind(column.type) != "list":
        verdicts.flag(np.ones(rows, dtype=bool), f"column {name!r} holds {column.type}")
        return values
    array = column.combine_chunks()
    nulls = array.is_null().to_numpy(zero_copy_only=False)
    verdicts.flag(nulls, f"null in column {name!r}")
    lengths = pc.list_value_length(array).fill_null(width).to_numpy()
    for length in np.unique(lengths[lengths != width]):
        verdicts.flag(
            lengths == length,
            f"column {name!r} holds {length} values; input {binding.name!r} "
            f"takes {width}",
        )
    holes = np.zeros(rows, dtype=bool)
    flat = pc.list_flatten(array)
    if flat.null_count:
        parents = pc.list_parent_indices(array).to_numpy()
        holes[parents[flat.is_null().to_numpy(zero_copy_only=False)]] = True
        verdicts.flag(holes, f"null inside the list in column {name!r}")
    fine = ~(nulls | holes) & (lengths == width)
    if fine.any():
        kept = pc.list_flatten(array.filter(pa.array(fine)))
        raw = kept.to_numpy(zero_copy_only=False).reshape(-1, width)
        values[fine], lossy = _cast(raw, dtype)
        for row in np.flatnonzero(fine)[lossy.any(axis=1)]:
            verdicts.flag_row(int(row), f"column {name!r} holds non-integers")
    return values


def read_input(
    table: pa.Table, binding: InputBinding, verdicts: Verdicts
) -> np.ndarray:
    """The binding's tensor for every row; rows it flags hold zeros."""
    rows = table.num_rows
    present = set(table.column_names)
    if not present.issuperset(binding.columns):
        verdicts.flag(np.ones(rows, dtype=bool), f"no column(s) {binding.columns}")
        return np.zeros((rows, *binding.shape), dtype=numpy_dtype(binding.datatype))
    if binding.list_column:
        values = _list_values(table.column(binding.columns[0]), binding, verdicts)
    else:
        dtype = numpy_dtype(binding.datatype)
        values = np.empty((rows, binding.width), dtype=dtype)
        for index, name in enumerate(binding.columns):
            values[:, index] = _scalars(table.column(name), name, dtype, verdicts)
    return values.reshape(rows, *binding.shape)


def output_column(spec: TensorSpec, values: np.ndarray, scored: np.ndarray) -> pa.Array:
    """An output as an Arrow column over every row, null where not scored."""
    dims = spec.shape[1:]
    full = np.zeros((len(scored), *dims), dtype=numpy_dtype(spec.datatype))
    full[scored] = values
    if not dims:
        return pa.array(full, mask=~scored)
    array = pa.array(full.reshape(-1))
    for size in reversed(dims[1:]):
        array = pa.FixedSizeListArray.from_arrays(array, size)
    return pa.FixedSizeListArray.from_arrays(array, dims[0], mask=pa.array(~scored))
