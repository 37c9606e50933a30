"""The request log's columns: one row per item, inputs named like the inputs."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import ml_dtypes
import numpy as np
import pyarrow as pa
import pytest

from rayfleet.platform.config.signature import Signature
from rayfleet.platform.errors import ConfigError
from rayfleet.platform.requestlog.buffer import LoggedRequest, tensor_bytes
from rayfleet.platform.requestlog.table import LOG_COLUMNS, LogLayout
from rayfleet.platform.validation.columns import tensor_column

DIGITS = Signature.model_validate(
    {
        "inputs": [{"name": "input", "datatype": "FP32", "shape": [-1, 64]}],
        "outputs": [
            {"name": "label", "datatype": "INT64", "shape": [-1]},
            {"name": "probabilities", "datatype": "FP32", "shape": [-1, 10]},
        ],
    }
)
T = 1_796_000_000.25  # 2026-11-30T...Z


def entry(
    request_id: str,
    inputs: dict[str, np.ndarray],
    outputs: dict[str, np.ndarray] | None,
    **fields: Any,
) -> LoggedRequest:
    rows = next(iter(inputs.values())).shape[0]
    values: dict[str, Any] = {
        "time": T,
        "model": "digits",
        "version": "v1",
        "status": 200 if outputs is not None else 500,
        "latency_ms": 3.5,
        "model_ms": 1.25,
        "shadow_of": None,
        **fields,
    }
    return LoggedRequest(
        request_id=request_id,
        inputs=inputs,
        outputs=outputs,
        rows=rows,
        nbytes=tensor_bytes(inputs),
        **values,
    )


def digits(rows: int, seed: int) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    probabilities = rng.random((rows, 10)).astype(np.float32)
    return (
        {"input": rng.random((rows, 64)).astype(np.float32)},
        {"label": probabilities.argmax(axis=1), "probabilities": probabilities},
    )


def test_the_schema_names_inputs_as_they_are_and_outputs_with_a_prefix() -> None:
    schema = LogLayout.of(DIGITS).schema
    assert schema.names == [
        *LOG_COLUMNS,
        "input",
        "output_label",
        "output_probabilities",
    ]
    assert list(LOG_COLUMNS) == [
        "request_id",
        "row",
        "time",
        "model",
        "version",
        "status",
        "latency_ms",
        "model_ms",
        "shadow_of",
    ]
    assert schema.field("time").type == pa.timestamp("us", tz="UTC")
    assert schema.field("input").type == pa.list_(pa.float32())
    assert schema.field("output_label").type == pa.int64()


def test_each_item_of_each_request_is_a_row() -> None:
    first_in, first_out = digits(3, 0)
    second_in, _ = digits(2, 1)
    table = LogLayout.of(DIGITS).to_table(
        [
            entry("a", first_in, first_out),
            entry("b", second_in, None, shadow_of="v0", latency_ms=9.0),
        ]
    )
    assert table.num_rows == 5
    assert table.column("request_id").to_pylist() == ["a"] * 3 + ["b"] * 2
    assert table.column("row").to_pylist() == [0, 1, 2, 0, 1]
    assert table.column("status").to_pylist() == [200] * 3 + [500] * 2
    assert table.column("latency_ms").to_pylist() == [3.5] * 3 + [9.0] * 2
    assert table.column("shadow_of").to_pylist() == [None] * 3 + ["v0"] * 2
    when = datetime.fromtimestamp(T, timezone.utc)
    assert table.column("time").to_pylist() == [when] * 5
    spec = DIGITS.inputs[0]
    np.testing.assert_array_equal(
        tensor_column(table.column("input"), spec),
        np.concatenate([first_in["input"], second_in["input"]]),
    )
    # A failed request's outputs are null, its inputs still there.
    assert table.column("output_label").to_pylist() == [
        *first_out["label"].tolist(),
        None,
        None,
    ]
    probabilities = table.column("output_probabilities").to_pylist()
    assert probabilities[3:] == [None, None]
    np.testing.assert_allclose(probabilities[:3], first_out["probabilities"])


def test_half_floats_are_widened_and_bytes_kept_as_binary() -> None:
    signature = Signature.model_validate(
        {
            "inputs": [
                {"name": "h", "datatype": "FP16", "shape": [-1, 2]},
                {"name": "b", "datatype": "BF16", "shape": [-1]},
                {"name": "t", "datatype": "BYTES", "shape": [-1, 2]},
            ],
            "outputs": [{"name": "y", "datatype": "BOOL", "shape": [-1]}],
        }
    )
    inputs = {
        "h": np.array([[1.5, 2.0]], np.float16),
        "b": np.array([0.25], ml_dtypes.bfloat16),
        "t": np.array([[b"ab", b""]], object),
    }
    table = LogLayout.of(signature).to_table(
        [entry("a", inputs, {"y": np.array([True])})]
    )
    assert table.schema.field("h").type == pa.list_(pa.float32())
    assert table.schema.field("b").type == pa.float32()
    assert table.schema.field("t").type == pa.list_(pa.binary())
    row = table.to_pylist()[0]
    assert {name: row[name] for name in ("h", "b", "t", "output_y")} == {
        "h": [1.5, 2.0],
        "b": 0.25,
        "t": [b"ab", b""],
        "output_y": True,
    }


def test_rows_are_counted_only_along_a_shared_batch_dimension() -> None:
    layout = LogLayout.of(DIGITS)
    inputs, outputs = digits(4, 0)
    assert layout.rows_of(inputs, outputs) == 4
    assert layout.rows_of(inputs, None) == 4
    assert layout.rows_of({"input": np.zeros((0, 64))}, None) == 0
    assert layout.rows_of(inputs, {**outputs, "label": np.zeros(3)}) is None
    assert layout.rows_of(inputs, {**outputs, "label": np.float32(1)}) is None
    assert layout.rows_of({}, outputs) is None
    # An output the model did not return is written null.
    assert layout.rows_of(inputs, {"label": outputs["label"]}) == 4


@pytest.mark.parametrize("name", ["status", "request_id", "output_label"])
def test_a_tensor_named_like_a_log_column_is_refused(name: str) -> None:
    signature = Signature.model_validate(
        {
            "inputs": [{"name": name, "datatype": "FP32", "shape": [-1]}],
            "outputs": [{"name": "label", "datatype": "INT64", "shape": [-1]}],
        }
    )
    with pytest.raises(ConfigError, match=name):
        LogLayout.of(signature)
