"""A column named like a tensor, read back as the tensor's rows."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from rayfleet.platform.config.signature import TensorSpec
from rayfleet.platform.errors import ConfigError
from rayfleet.platform.validation.columns import is_tensor_column, tensor_column


def spec(*shape: int) -> TensorSpec:
    return TensorSpec(name="x", datatype="FP32", shape=shape)


def test_a_number_per_row_is_a_one_dimensional_tensor() -> None:
    column = pa.chunked_array([[1.0, 2.0], [3.0]])
    np.testing.assert_array_equal(tensor_column(column, spec(-1)), [1.0, 2.0, 3.0])
    assert tensor_column(column, spec(-1, 1)).shape == (3, 1)


@pytest.mark.parametrize(
    ("kind", "shape", "expected"),
    [
        (pa.list_(pa.float32()), (-1, 6), (2, 6)),
        (pa.large_list(pa.float64()), (-1, 2, 3), (2, 2, 3)),
        (pa.list_(pa.float32(), 6), (-1, 3, -1), (2, 3, 2)),
    ],
)
def test_a_list_per_row_is_the_row_flattened(
    kind: pa.DataType, shape: tuple[int, ...], expected: tuple[int, ...]
) -> None:
    values = np.arange(12, dtype=np.float64)
    column = pa.array([values[:6].tolist(), values[6:].tolist()], kind)
    result = tensor_column(column, spec(*shape))
    assert result.shape == expected
    np.testing.assert_array_equal(result.reshape(2, -1), values.reshape(2, 6))


def test_no_rows_is_an_empty_tensor() -> None:
    assert tensor_column(pa.array([], pa.list_(pa.float32())), spec(-1, 4)).shape == (
        0,
        4,
    )


@pytest.mark.parametrize(
    ("column", "shape", "message"),
    [
        (pa.array([[1.0], None], pa.list_(pa.float32())), (-1, 1), "null row"),
        (pa.array([[1.0, None]], pa.list_(pa.float32())), (-1, 2), "nulls inside"),
        (pa.array([[1.0], [1.0, 2.0]], pa.list_(pa.float32())), (-1, -1), "same"),
        (pa.array([[1.0, 2.0, 3.0]], pa.list_(pa.float32())), (-1, 2), "do not fill"),
        (pa.array([1.0, 2.0]), (-1, 4), "one number per row"),
    ],
)
def test_rows_that_do_not_fit_are_refused(
    column: pa.Array, shape: tuple[int, ...], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        tensor_column(column, spec(*shape))


def test_only_numbers_or_lists_of_numbers_feed_a_tensor() -> None:
    schema = pa.schema(
        [
            ("x", pa.list_(pa.float32())),
            ("y", pa.string()),
            ("z", pa.list_(pa.string())),
        ]
    )
    assert is_tensor_column(schema, spec(-1, 2))
    for name in ("y", "z", "w"):
        other = TensorSpec(name=name, datatype="FP32", shape=(-1,))
        assert not is_tensor_column(schema, other)
