"""The one interface every runtime implements, and warm-up on top of it."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Protocol

import numpy as np

from rayfleet.platform.config.signature import Signature, TensorSpec
from rayfleet.platform.errors import InvalidInput, ModelError, RayfleetError
from rayfleet.platform.protocol.datatypes import numpy_dtype
from rayfleet.platform.runtimes.device import Device

__all__ = [
    "Runtime",
    "guarded_predict",
    "warm_up",
    "zero_inputs",
    "zero_row_outputs",
]


class Runtime(Protocol):
    """A loaded model version: a batch of named inputs in, named outputs out.

    Inputs and outputs share the first (batch) dimension when the signature has
    one. ``predict`` may block; replicas run it off their event loop.
    """

    @property
    def device(self) -> Device:
        """What the version really runs on, as its replica reports it."""
        ...

    def predict(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run the model on one batch."""
        ...


def zero_inputs(signature: Signature, batch_size: int) -> dict[str, np.ndarray]:
    """Inputs of the right names, dtypes and shapes, filled with zeros.

    Free dimensions become ``batch_size`` in the first place and 1 elsewhere.
    """
    return _zeros(signature.inputs, batch_size)


def zero_row_outputs(
    signature: Signature, inputs: Mapping[str, np.ndarray]
) -> dict[str, np.ndarray] | None:
    """The answer to a request with zero rows, built from ``signature`` alone.

    A request has zero rows when an input the signature batches (first dimension
    ``-1``) arrives with a first dimension of 0. Its answer is every declared
    output with zero rows, in the declared datatype: no model needs to run for it,
    and many runtimes fail on an empty batch. ``None`` when the request has rows.

    Raises :class:`InvalidInput` for zero rows when an output has no batch
    dimension: there is no empty answer of that shape, so the request needs a row.
    """
    empty = any(
        spec.batched
        and spec.name in inputs
        and np.ndim(inputs[spec.name]) > 0
        and np.shape(inputs[spec.name])[0] == 0
        for spec in signature.inputs
    )
    if not empty:
        return None
    fixed = [spec.name for spec in signature.outputs if not spec.batched]
    if fixed:
        raise InvalidInput(
            f"the request has zero rows, and output(s) {fixed} have no batch "
            "dimension: send at least one row"
        )
    return _zeros(signature.outputs, 0)


def _zeros(specs: Sequence[TensorSpec], batch_size: int) -> dict[str, np.ndarray]:
    tensors = {}
    for spec in specs:
        shape = tuple(
            (batch_size if index == 0 else 1) if dim == -1 else dim
            for index, dim in enumerate(spec.shape)
        )
        if spec.datatype == "BYTES":
            tensors[spec.name] = np.full(shape, b"", dtype=object)
        else:
            tensors[spec.name] = np.zeros(shape, dtype=numpy_dtype(spec.datatype))
    return tensors


def warm_up(runtime: Runtime, signature: Signature, max_batch_size: int) -> None:
    """Run the model on the smallest and the largest batch it will see.

    Sessions allocate and pick kernels on their first calls; doing that here, in
    the replica's constructor, keeps the cost off the first client of a new replica.
    """
    sizes = sorted({1, max_batch_size}) if signature.batchable else [1]
    for size in sizes:
        runtime.predict(zero_inputs(signature, size))


def guarded_predict(
    runtime: Runtime, inputs: Mapping[str, np.ndarray], where: str
) -> tuple[dict[str, np.ndarray], float]:
    """``runtime.predict`` and the milliseconds it took, with anything the model's
    own code raises turned into :class:`ModelError` naming ``where``
    (model/version), so a client gets a 500 with the message and the replica
    carries on.

    The time is taken around the call itself, wherever it runs, so a thread or an
    event loop that kept it waiting does not count as the model's.
    """
    started = time.perf_counter()
    try:
        outputs = runtime.predict(inputs)
    except RayfleetError:
        raise
    except Exception as error:
        raise ModelError(f"{where} failed: {type(error).__name__}: {error}") from None
    return outputs, (time.perf_counter() - started) * 1000
