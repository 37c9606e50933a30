"""A table column named like a tensor, read back as that tensor's rows.

``rayfleet batch`` feeds a model input from a column of the input's name (a
number per row, or a list of numbers), and the request log writes each input so
(:mod:`rayfleet.platform.requestlog.table`). This is the same reading for the
code that loads a whole table at once: ``rayfleet validate --data`` and the
reference built from a request log.
"""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from rayfleet.platform.config.signature import TensorSpec
from rayfleet.platform.errors import ConfigError

__all__ = ["is_tensor_column", "tensor_column"]


def _is_list(kind: pa.DataType) -> bool:
    t = pa.types
    return bool(t.is_list(kind) or t.is_large_list(kind) or t.is_fixed_size_list(kind))


def is_tensor_column(schema: pa.Schema, spec: TensorSpec) -> bool:
    """Whether a table of ``schema`` has a column named like ``spec`` holding
    numbers or lists of numbers."""
    if spec.name not in schema.names:
        return False
    kind = schema.field(spec.name).type
    if _is_list(kind):
        kind = kind.value_type
    t = pa.types
    return bool(t.is_integer(kind) or t.is_floating(kind) or t.is_boolean(kind))


def tensor_column(column: pa.ChunkedArray | pa.Array, spec: TensorSpec) -> np.ndarray:
    """The rows of ``column`` as one array of shape ``[rows, *spec.shape[1:]]``.

    A column of numbers is one number per row; a list column holds each row
    flattened. A dimension ``-1`` after the first takes whatever the rows hold,
    as long as they all hold as much. Raises :class:`ConfigError` for nulls and
    for rows that do not fit the shape.
    """
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    if column.null_count:
        raise ConfigError(
            f"column {spec.name!r} has {column.null_count} null row(s); "
            f"input {spec.name!r} needs a value in every row"
        )
    rows = len(column)
    item = spec.shape[1:]
    if not rows:
        return np.zeros((0, *(max(d, 0) for d in item)))
    if not _is_list(column.type):
        if math.prod(item) != 1 and -1 not in item:
            raise ConfigError(
                f"column {spec.name!r} holds one number per row; input "
                f"{spec.name!r} takes {list(spec.shape)}"
            )
        values: np.ndarray = column.to_numpy(zero_copy_only=False)
        return values.reshape(rows, *(1 for _ in item))
    lengths = pc.list_value_length(column).to_numpy(zero_copy_only=False)
    width = int(lengths[0])
    if (lengths != width).any():
        raise ConfigError(
            f"rows of column {spec.name!r} hold {sorted(set(lengths.tolist()))[:5]} "
            f"values; input {spec.name!r} takes the same number in every row"
        )
    flat = pc.list_flatten(column)
    if flat.null_count:
        raise ConfigError(f"column {spec.name!r} has nulls inside its lists")
    flat_values: np.ndarray = flat.to_numpy(zero_copy_only=False)
    fixed = math.prod(d for d in item if d != -1)
    free = item.count(-1)
    if free > 1 or (free == 0 and fixed != width) or (free and width % fixed):
        raise ConfigError(
            f"rows of column {spec.name!r} hold {width} values, which do not "
            f"fill input {spec.name!r} of shape {list(spec.shape)}"
        )
    shape = tuple(width // fixed if d == -1 else d for d in item)
    return flat_values.reshape(rows, *shape)
