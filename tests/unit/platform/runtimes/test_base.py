"""Answers built from a signature: warm-up inputs and zero-row outputs."""

from __future__ import annotations

import numpy as np
import pytest

from rayfleet.platform.config.signature import Signature
from rayfleet.platform.errors import InvalidInput
from rayfleet.platform.runtimes.base import zero_inputs, zero_row_outputs


def signature(outputs: list[dict[str, object]]) -> Signature:
    return Signature.model_validate(
        {
            "inputs": [
                {"name": "x", "datatype": "FP32", "shape": [-1, 4]},
                {"name": "scale", "datatype": "FP64", "shape": [1]},
            ],
            "outputs": outputs,
        }
    )


BATCHED = signature(
    [
        {"name": "label", "datatype": "INT64", "shape": [-1]},
        {"name": "scores", "datatype": "FP16", "shape": [-1, 3]},
        {"name": "free", "datatype": "UINT8", "shape": [-1, -1]},
        {"name": "name", "datatype": "BYTES", "shape": [-1, 1]},
    ]
)


def inputs(rows: int) -> dict[str, np.ndarray]:
    return {"x": np.zeros((rows, 4), np.float32), "scale": np.ones(1)}


def test_zero_rows_get_every_output_empty_in_its_datatype() -> None:
    outputs = zero_row_outputs(BATCHED, inputs(0))
    assert outputs is not None
    assert {name: (a.shape, a.dtype.str) for name, a in outputs.items()} == {
        "label": ((0,), "<i8"),
        "scores": ((0, 3), "<f2"),
        "free": ((0, 1), "|u1"),
        "name": ((0, 1), "|O"),
    }


@pytest.mark.parametrize(
    "sent",
    [
        inputs(1),
        # Unchecked inputs (a replica's) are read, never trusted to be complete.
        {"scale": np.ones(1)},
        {"x": np.float32(0.0), "scale": np.ones(1)},
    ],
)
def test_requests_with_rows_are_left_to_the_model(sent: dict[str, np.ndarray]) -> None:
    assert zero_row_outputs(BATCHED, sent) is None


def test_zero_rows_cannot_be_answered_without_a_batch_dimension() -> None:
    fixed = signature(
        [
            {"name": "label", "datatype": "INT64", "shape": [-1]},
            {"name": "mean", "datatype": "FP32", "shape": [4]},
        ]
    )
    with pytest.raises(InvalidInput, match=r"zero rows.*\['mean'\]"):
        zero_row_outputs(fixed, inputs(0))
    assert zero_row_outputs(fixed, inputs(2)) is None


def test_zero_inputs_still_fill_free_dimensions() -> None:
    warm = zero_inputs(BATCHED, 3)
    assert warm["x"].shape == (3, 4) and warm["scale"].shape == (1,)
