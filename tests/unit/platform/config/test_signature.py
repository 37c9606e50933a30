from __future__ import annotations

import numpy as np
import pytest

from rayfleet.platform.config.signature import Signature, TensorSpec, check_inputs
from rayfleet.platform.errors import InvalidInput

SIGNATURE = Signature(
    inputs=(
        TensorSpec(name="image", datatype="FP32", shape=(-1, 3, 4, 4)),
        TensorSpec(name="meta", datatype="INT64", shape=(-1, 2)),
    ),
    outputs=(TensorSpec(name="score", datatype="FP32", shape=(-1,)),),
)


def good(batch: int = 2) -> dict[str, np.ndarray]:
    return {
        "image": np.zeros((batch, 3, 4, 4), np.float32),
        "meta": np.zeros((batch, 2), np.int64),
    }


def test_good_inputs_pass() -> None:
    check_inputs(SIGNATURE, good(), {"image": "FP32", "meta": "INT64"})
    assert SIGNATURE.batchable


@pytest.mark.parametrize(
    ("inputs", "datatypes", "message"),
    [
        ({"image": good()["image"]}, {}, "missing input(s) ['meta']"),
        ({**good(), "other": np.zeros(1)}, {}, "unexpected input(s) ['other']"),
        (good(), {"image": "FP64"}, "input 'image' has datatype FP64"),
        (
            {**good(), "image": np.zeros((2, 3, 4), np.float32)},
            {},
            "input 'image' has shape [2, 3, 4]",
        ),
        (
            {**good(), "image": np.zeros((2, 1, 4, 4), np.float32)},
            {},
            "the model takes [-1, 3, 4, 4]",
        ),
        ({**good(), "meta": np.zeros((3, 2), np.int64)}, {}, "disagree on the batch"),
    ],
)
def test_mismatches_are_invalid_input(
    inputs: dict[str, np.ndarray], datatypes: dict[str, str], message: str
) -> None:
    with pytest.raises(InvalidInput) as raised:
        check_inputs(SIGNATURE, inputs, datatypes)
    assert message in raised.value.message


@pytest.mark.parametrize(
    "spec",
    [
        {"name": "x", "datatype": "FLOAT", "shape": [1]},
        {"name": "x", "datatype": "FP32", "shape": [0]},
        {"name": "x", "datatype": "FP32", "shape": [-2]},
        {"name": "", "datatype": "FP32", "shape": [1]},
    ],
)
def test_bad_tensor_specs_are_refused(spec: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        TensorSpec.model_validate(spec)
