"""A version's declared input/output signature, and request checks against it.

Every request is checked here, at the router, before it reaches a replica: a wrong
input name, datatype or shape is the client's mistake and gets a 400, not a 500 from
deep inside a runtime.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from rayfleet.platform.errors import InvalidInput

__all__ = ["Signature", "TensorSpec", "check_inputs"]

V2_DATATYPES = frozenset(
    {
        "BOOL",
        "UINT8",
        "UINT16",
        "UINT32",
        "UINT64",
        "INT8",
        "INT16",
        "INT32",
        "INT64",
        "FP16",
        "FP32",
        "FP64",
        "BF16",
        "BYTES",
    }
)


class TensorSpec(BaseModel):
    """One named tensor: its v2 datatype and shape, ``-1`` for any size.

    The first dimension is the batch dimension when it is ``-1``; replicas batch
    requests together only along it.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1)
    datatype: str
    shape: tuple[int, ...]

    @field_validator("datatype")
    @classmethod
    def _known_datatype(cls, value: str) -> str:
        if value not in V2_DATATYPES:
            raise ValueError(
                f"unknown datatype {value!r}; expected one of {sorted(V2_DATATYPES)}"
            )
        return value

    @field_validator("shape")
    @classmethod
    def _dims(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        if any(dim < -1 or dim == 0 for dim in value):
            raise ValueError(f"shape {list(value)}: each dim must be -1 or positive")
        return value

    def accepts_shape(self, shape: Sequence[int]) -> bool:
        """Whether a tensor of ``shape`` fits this spec."""
        return len(shape) == len(self.shape) and all(
            want in (-1, got) for want, got in zip(self.shape, shape, strict=False)
        )

    @property
    def batched(self) -> bool:
        """Whether the first dimension is a free batch dimension."""
        return bool(self.shape) and self.shape[0] == -1


class Signature(BaseModel):
    """The inputs a version takes and the outputs it returns."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    inputs: tuple[TensorSpec, ...] = Field(min_length=1)
    outputs: tuple[TensorSpec, ...] = Field(min_length=1)

    @property
    def batchable(self) -> bool:
        """Whether requests can be stacked along a shared first dimension."""
        return all(spec.batched for spec in (*self.inputs, *self.outputs))

    def input(self, name: str) -> TensorSpec:
        """The input spec called ``name``."""
        for spec in self.inputs:
            if spec.name == name:
                return spec
        raise KeyError(name)


def check_inputs(
    signature: Signature,
    inputs: Mapping[str, np.ndarray],
    datatypes: Mapping[str, str],
) -> None:
    """Raise :class:`InvalidInput` unless ``inputs`` match ``signature`` exactly.

    ``datatypes`` holds the v2 datatype each input was sent as. Checks names (none
    missing, none extra), datatype, rank and every fixed dimension, and that all
    batched inputs agree on the batch size.
    """
    expected = {spec.name for spec in signature.inputs}
    missing = sorted(expected - inputs.keys())
    extra = sorted(inputs.keys() - expected)
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"missing input(s) {missing}")
        if extra:
            parts.append(f"unexpected input(s) {extra}")
        raise InvalidInput(f"{'; '.join(parts)}; the model takes {sorted(expected)}")
    batch_sizes = set()
    for spec in signature.inputs:
        array = inputs[spec.name]
        sent = datatypes.get(spec.name)
        if sent is not None and sent != spec.datatype:
            raise InvalidInput(
                f"input {spec.name!r} has datatype {sent}; the model takes "
                f"{spec.datatype}"
            )
        if not spec.accepts_shape(array.shape):
            raise InvalidInput(
                f"input {spec.name!r} has shape {list(array.shape)}; the model takes "
                f"{list(spec.shape)} (-1 is any size)"
            )
        if spec.batched:
            batch_sizes.add(array.shape[0])
    if len(batch_sizes) > 1:
        raise InvalidInput(
            f"batched inputs disagree on the batch size: {sorted(batch_sizes)}"
        )
