"""TF-Serving / KServe v1 ``:predict`` codec.

Requests come in one of two formats:

* row: ``{"instances": [...]}``, one entry per row. With a single model input an
  instance is that input's row (or an object ``{name: row}``); with several it is an
  object mapping every input name to its row.
* columnar: ``{"inputs": ...}``, the whole tensor for a single input, or an object
  mapping every input name to its whole tensor.

Responses are always ``{"predictions": [...]}``: the rows of the output when there
is one, otherwise one object per row mapping each output name to its row.

BYTES values are JSON strings (their UTF-8 bytes), or TF-Serving's
``{"b64": "..."}`` objects for arbitrary bytes. Outputs use a plain string when the
bytes are valid UTF-8 and ``{"b64": ...}`` otherwise, so nothing is lost.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, TypeGuard

import numpy as np

from rayfleet.platform.errors import InvalidInput, ModelError
from rayfleet.platform.protocol.datatypes import (
    array_from_json,
    array_to_json,
    element_size,
    v2_datatype,
)
from rayfleet.platform.protocol.jsonio import dump_json, load_json
from rayfleet.platform.protocol.limits import (
    DEFAULT_MAX_DECODED_BYTES,
    check_decoded_bytes,
    decoded_bytes,
)
from rayfleet.platform.protocol.types import InferRequest, InferResponse

__all__ = ["decode_v1_request", "encode_v1_response"]


def decode_v1_request(
    body: bytes,
    input_names: Sequence[str],
    input_dtypes: Sequence[str],
    *,
    max_decoded_bytes: int = DEFAULT_MAX_DECODED_BYTES,
) -> InferRequest:
    """Decode a v1 ``:predict`` body for a model with these inputs and datatypes.

    ``input_names`` and ``input_dtypes`` are the model's signature, in order, with
    v2 datatype names. Every problem with the body raises InvalidInput; inputs
    that decode to more than ``max_decoded_bytes`` together raise PayloadTooLarge.
    """
    if len(input_names) != len(input_dtypes) or not input_names:
        raise ValueError(
            "input_names and input_dtypes must be non-empty and of equal length"
        )
    try:
        document = load_json(body)
    except (ValueError, RecursionError) as e:
        raise InvalidInput(f"request body is not valid JSON: {e}") from e
    if not isinstance(document, dict):
        raise InvalidInput("request body must be a JSON object")
    if ("instances" in document) == ("inputs" in document):
        raise InvalidInput(
            "request body needs exactly one of 'instances' (row format) "
            "or 'inputs' (columnar format)"
        )
    if "instances" in document:
        columns = _columns_from_rows(document["instances"], input_names)
    else:
        columns = _columns_from_inputs(document["inputs"], input_names)
    inputs: dict[str, np.ndarray] = {}
    decoded = 0
    for name, datatype in zip(input_names, input_dtypes, strict=True):
        # The nesting is the shape, so the size is known only once numpy has read
        # the JSON; that copy is bounded by the body, which already holds at
        # least two bytes (a digit and a comma) per element.
        inputs[name] = array_from_json(name, columns[name], datatype, b64=True)
        decoded += decoded_bytes(inputs[name].shape, element_size(datatype))
        check_decoded_bytes(f"input {name!r}", decoded, max_decoded_bytes)
    return InferRequest(
        inputs=inputs, datatypes=dict(zip(input_names, input_dtypes, strict=True))
    )


def encode_v1_response(response: InferResponse) -> bytes:
    """Encode ``response`` as ``{"predictions": [...]}``, one entry per row.

    Every output needs a leading batch axis, and with several outputs they must
    agree on its length; otherwise the model's outputs cannot be split into rows
    and ModelError is raised.
    """
    if not response.outputs:
        raise ModelError(f"model {response.model_name!r} returned no outputs")
    rows: dict[str, list[Any]] = {}
    for name, arr in response.outputs.items():
        if arr.ndim == 0:
            raise ModelError(
                f"output {name!r} is a scalar; v1 predictions need a batch axis"
            )
        try:
            datatype = v2_datatype(arr)
        except InvalidInput as e:
            raise ModelError(f"output {name!r}: {e.message}") from None
        rows[name] = array_to_json(name, arr, datatype, flat=False, b64=True)
    if len(rows) == 1:
        (predictions,) = rows.values()
    else:
        batch_sizes = {name: len(values) for name, values in rows.items()}
        if len(set(batch_sizes.values())) > 1:
            raise ModelError(
                f"outputs have different batch sizes {batch_sizes}; "
                "v1 predictions need one"
            )
        batch = next(iter(batch_sizes.values()))
        predictions = [
            {name: values[row] for name, values in rows.items()} for row in range(batch)
        ]
    return dump_json({"predictions": predictions})


def _is_b64(value: object) -> bool:
    return isinstance(value, dict) and value.keys() == {"b64"}


def _is_named(value: object) -> TypeGuard[dict[str, Any]]:
    """Whether an instance is an object of named inputs rather than a bare value."""
    return isinstance(value, dict) and not _is_b64(value)


def _columns_from_rows(instances: object, names: Sequence[str]) -> dict[str, Any]:
    if not isinstance(instances, list):
        raise InvalidInput("'instances' must be a list")
    if not instances:
        raise InvalidInput("'instances' is empty")
    if len(names) == 1 and not any(_is_named(instance) for instance in instances):
        return {names[0]: instances}
    columns: dict[str, list[Any]] = {name: [] for name in names}
    for index, instance in enumerate(instances):
        if not _is_named(instance):
            raise InvalidInput(
                f"instances[{index}] must be an object mapping the inputs "
                f"{list(names)} to their rows"
            )
        _check_keys(instance, names, f"instances[{index}]")
        for name in names:
            columns[name].append(instance[name])
    return columns


def _columns_from_inputs(inputs: object, names: Sequence[str]) -> dict[str, Any]:
    if _is_named(inputs):
        _check_keys(inputs, names, "'inputs'")
        return inputs
    if len(names) == 1:
        return {names[0]: inputs}
    raise InvalidInput(
        f"'inputs' must be an object mapping the inputs {list(names)} to their values"
    )


def _check_keys(value: Mapping[str, Any], names: Sequence[str], where: str) -> None:
    missing = [name for name in names if name not in value]
    if missing:
        raise InvalidInput(f"{where} is missing input(s) {missing}")
    unexpected = sorted(set(value) - set(names))
    if unexpected:
        raise InvalidInput(f"{where} has unknown input(s) {unexpected}")
