"""KServe v2 (Open Inference Protocol) REST codec with the binary tensor extension.

A body is a JSON header, optionally followed by raw tensor bytes. When the
``Inference-Header-Content-Length`` HTTP header is present it is the length of the
JSON part; each tensor whose ``parameters.binary_data_size`` is set takes that many
bytes from what follows, in tensor order. Binary tensors are little-endian and
row-major; a binary BYTES tensor is its elements, each a 4-byte little-endian length
followed by the bytes. This is the layout Triton and ``tritonclient.http`` use.

Binary inputs are decoded without copying: each array is a read-only view of the
request body. A view may be unaligned when the JSON header length is not a multiple
of the element size; numpy handles that, and a model that needs aligned memory
copies it itself.

Responses are returned as chunks (:class:`EncodedResponse`) so that large binary
outputs are sent from the arrays' own memory instead of being joined into one body.

BYTES outputs requested as JSON are sent as strings when they are valid UTF-8, as
Triton does; other bytes would be mangled by JSON, so such a request is refused
with an InvalidInput that tells the client to ask for binary data. Non-finite
floats in JSON are written as ``NaN``/``Infinity``, which Python's and Triton's
(rapidjson) parsers accept.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

import numpy as np

from rayfleet.platform.errors import InvalidInput, ModelError
from rayfleet.platform.protocol.bytes_codec import (
    BytesWording,
    check_bytes_count,
    decode_bytes,
    encode_bytes,
)
from rayfleet.platform.protocol.datatypes import (
    array_from_json,
    array_to_json,
    element_size,
    little_endian,
    numpy_dtype,
    v2_datatype,
)
from rayfleet.platform.protocol.jsonio import dump_json, load_json
from rayfleet.platform.protocol.limits import (
    DEFAULT_MAX_DECODED_BYTES,
    check_decoded_bytes,
    check_shape,
    decoded_bytes,
)
from rayfleet.platform.protocol.types import (
    InferRequest,
    InferResponse,
    RequestedOutput,
)

__all__ = [
    "EncodedResponse",
    "decode_request",
    "encode_response",
    "parse_header_length",
]

# No body the router accepts is longer than int64 allows, which is 19 digits.
_MAX_LENGTH_DIGITS: Final = 19

_WORDING = BytesWording(
    too_small="binary_data_size {size} is too small for {count} BYTES elements",
    ends_before="binary BYTES data ends before element {index}",
    overruns="BYTES element {index} of length {length} overruns binary_data_size",
    trailing="binary BYTES data has {remaining} bytes after its {count} elements",
)


@dataclass(frozen=True)
class EncodedResponse:
    """A v2 response body as chunks to write in order.

    ``chunks[0]`` is the JSON header; the rest are the non-empty binary outputs in
    header order: a byte memoryview of the output array's own memory when it is
    already contiguous and little-endian (of a contiguous copy otherwise), or
    ``bytes`` for BYTES outputs. ``header_length`` is the value for the
    ``Inference-Header-Content-Length`` HTTP header, or None when the body is JSON
    only and the header must be left out.
    """

    chunks: list[bytes | memoryview]
    header_length: int | None

    @property
    def content_length(self) -> int:
        """Total body size in bytes, for the Content-Length header."""
        return sum(len(chunk) for chunk in self.chunks)

    def body(self) -> bytes:
        """The whole body joined into one bytes object (copies binary outputs)."""
        return b"".join(self.chunks)


def parse_header_length(value: str | None) -> int | None:
    """The ``Inference-Header-Content-Length`` header as an int; None when absent.

    Strict: ASCII digits only (``str.isdigit`` also takes "²", which ``int``
    refuses) and at most 19 of them, so that no value makes ``int`` work hard or
    fail; anything else is InvalidInput. :func:`decode_request` checks it against
    the body's length.
    """
    if value is None:
        return None
    if not (
        0 < len(value) <= _MAX_LENGTH_DIGITS and value.isascii() and value.isdigit()
    ):
        shown = value if len(value) <= 40 else value[:40] + "..."
        raise InvalidInput(
            "Inference-Header-Content-Length must be "
            "a non-negative integer of at most "
            f"{_MAX_LENGTH_DIGITS} digits: {shown!r}"
        )
    return int(value)


def decode_request(
    body: bytes,
    header_length: int | None,
    *,
    max_decoded_bytes: int = DEFAULT_MAX_DECODED_BYTES,
) -> InferRequest:
    """Decode a v2 inference request body.

    ``header_length`` is the ``Inference-Header-Content-Length`` header value, or
    None when absent (the whole body is JSON). Every problem with the body raises
    InvalidInput naming the offending input; inputs whose declared shapes add up
    to more than ``max_decoded_bytes`` raise PayloadTooLarge before any is built.
    """
    view = memoryview(body)
    size = len(view)
    if header_length is None:
        header_end = size
    elif header_length < 0:
        raise InvalidInput(
            f"Inference-Header-Content-Length {header_length} is negative"
        )
    elif header_length > size:
        raise InvalidInput(
            f"Inference-Header-Content-Length {header_length} is larger than "
            f"the body ({size} bytes)"
        )
    else:
        header_end = header_length
    header = _load_header(view[:header_end])

    inputs_json = header.get("inputs")
    if inputs_json is None:
        raise InvalidInput("request has no 'inputs'")
    if not isinstance(inputs_json, list):
        raise InvalidInput("'inputs' must be a list")

    inputs: dict[str, np.ndarray] = {}
    datatypes: dict[str, str] = {}
    offset = header_end
    decoded = 0
    for index, spec in enumerate(inputs_json):
        name, shape, datatype, parameters = _input_spec(index, spec)
        if name in inputs:
            raise InvalidInput(f"input {name!r} appears more than once")
        label = f"input {name!r}"
        decoded += decoded_bytes(shape, element_size(datatype))
        binary_size = parameters.get("binary_data_size")
        if binary_size is not None:
            if "data" in spec:
                raise InvalidInput(
                    f"input {name!r} has both 'data' and binary_data_size"
                )
            if isinstance(binary_size, bool) or not isinstance(binary_size, int):
                raise InvalidInput(
                    f"input {name!r}: binary_data_size must be an integer"
                )
            if binary_size < 0:
                raise InvalidInput(f"input {name!r}: binary_data_size is negative")
            if header_length is None and binary_size > 0:
                raise InvalidInput(
                    f"input {name!r} has binary_data_size but the request has no "
                    "Inference-Header-Content-Length header"
                )
            if offset + binary_size > size:
                raise InvalidInput(
                    f"input {name!r}: binary_data_size {binary_size} overruns the "
                    f"body; only {size - offset} bytes remain"
                )
            if datatype == "BYTES":
                # A shape its data cannot hold is malformed rather than large;
                # the payload is copied out of the body, so it counts too.
                check_bytes_count(label, binary_size, math.prod(shape), _WORDING)
                decoded += binary_size
            check_decoded_bytes(label, decoded, max_decoded_bytes)
            inputs[name] = _binary_input(
                name, view, offset, binary_size, datatype, shape
            )
            offset += binary_size
        elif "data" in spec:
            check_decoded_bytes(label, decoded, max_decoded_bytes)
            inputs[name] = array_from_json(name, spec["data"], datatype, shape)
        else:
            raise InvalidInput(f"input {name!r} has neither 'data' nor binary data")
        datatypes[name] = datatype
    if offset != size:
        raise InvalidInput(
            f"body has {size - offset} bytes after the last binary input "
            "that no binary_data_size accounts for"
        )

    parameters = _parameters(header.get("parameters"), "request")
    binary_default = parameters.pop("binary_data_output", False)
    if not isinstance(binary_default, bool):
        raise InvalidInput("parameter binary_data_output must be true or false")
    request_id = header.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise InvalidInput("request 'id' must be a string")
    return InferRequest(
        inputs=inputs,
        datatypes=datatypes,
        outputs=_requested_outputs(header.get("outputs"), binary_default),
        id=request_id,
        parameters=parameters,
        binary_default=binary_default,
    )


def encode_response(
    response: InferResponse,
    requested: Sequence[RequestedOutput],
    binary_default: bool,
) -> EncodedResponse:
    """Encode ``response`` as a v2 body, binary outputs after the JSON header.

    With ``requested`` empty every output is sent, as binary when
    ``binary_default`` is set; otherwise exactly the requested outputs, in that
    order, each as its ``binary_data`` says. A requested name the model did not
    produce raises InvalidInput; an output no v2 datatype carries raises ModelError.
    """
    if requested:
        selection = [(wanted.name, wanted.binary_data) for wanted in requested]
        missing = [name for name, _ in selection if name not in response.outputs]
        if missing:
            raise InvalidInput(
                f"requested output {missing[0]!r} is not an output of model "
                f"{response.model_name!r}; it has {sorted(response.outputs)}"
            )
    else:
        selection = [(name, binary_default) for name in response.outputs]

    outputs_json: list[dict[str, Any]] = []
    binary_chunks: list[bytes | memoryview] = []
    for name, binary in selection:
        arr = response.outputs[name]
        try:
            datatype = v2_datatype(arr)
        except InvalidInput as e:
            raise ModelError(f"output {name!r}: {e.message}") from None
        entry: dict[str, Any] = {
            "name": name,
            "datatype": datatype,
            "shape": list(arr.shape),
        }
        if binary:
            chunk = _binary_output(name, arr, datatype)
            entry["parameters"] = {"binary_data_size": len(chunk)}
            if len(chunk):
                binary_chunks.append(chunk)
        else:
            entry["data"] = array_to_json(name, arr, datatype, flat=True)
        outputs_json.append(entry)

    header: dict[str, Any] = {
        "model_name": response.model_name,
        "model_version": response.model_version,
    }
    if response.id is not None:
        header["id"] = response.id
    if response.parameters:
        header["parameters"] = response.parameters
    header["outputs"] = outputs_json
    try:
        header_bytes = dump_json(header)
    except (TypeError, ValueError, RecursionError) as e:
        raise ModelError(f"response parameters are not JSON-serializable: {e}") from e
    any_binary = any(binary for _, binary in selection)
    return EncodedResponse(
        chunks=[header_bytes, *binary_chunks],
        header_length=len(header_bytes) if any_binary else None,
    )


def _load_header(raw: memoryview) -> dict[str, Any]:
    try:
        header = load_json(raw)
    except (ValueError, RecursionError) as e:
        # JSONDecodeError and UnicodeDecodeError are ValueErrors; absurdly deep
        # nesting exhausts the parser's recursion instead.
        raise InvalidInput(f"request header is not valid JSON: {e}") from e
    if not isinstance(header, dict):
        raise InvalidInput("request header must be a JSON object")
    return header


def _input_spec(index: int, spec: object) -> tuple[str, list[int], str, dict[str, Any]]:
    """Name, shape, datatype and parameters of one entry of 'inputs', validated."""
    if not isinstance(spec, dict):
        raise InvalidInput(f"inputs[{index}] must be an object")
    name = spec.get("name")
    if not isinstance(name, str) or not name:
        raise InvalidInput(f"inputs[{index}] has no 'name'")
    raw_shape = spec.get("shape")
    if raw_shape is None:
        raise InvalidInput(f"input {name!r} has no 'shape'")
    if not isinstance(raw_shape, list):
        raise InvalidInput(f"input {name!r}: 'shape' must be a list of integers")
    datatype = spec.get("datatype")
    if datatype is None:
        raise InvalidInput(f"input {name!r} has no 'datatype'")
    try:
        dtype = numpy_dtype(datatype)
    except InvalidInput as e:
        raise InvalidInput(f"input {name!r}: {e.message}") from None
    shape = list(check_shape(f"input {name!r}", raw_shape, dtype.itemsize))
    parameters = _parameters(spec.get("parameters"), f"input {name!r}")
    if "shared_memory_region" in parameters:
        raise InvalidInput(f"input {name!r}: shared memory inputs are not supported")
    return name, shape, datatype, parameters


def _parameters(value: object, owner: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidInput(f"{owner}: 'parameters' must be an object")
    return dict(value)


def _requested_outputs(value: object, binary_default: bool) -> list[RequestedOutput]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise InvalidInput("'outputs' must be a list")
    requested: list[RequestedOutput] = []
    seen: set[str] = set()
    for index, spec in enumerate(value):
        if not isinstance(spec, dict):
            raise InvalidInput(f"outputs[{index}] must be an object")
        name = spec.get("name")
        if not isinstance(name, str) or not name:
            raise InvalidInput(f"outputs[{index}] has no 'name'")
        if name in seen:
            raise InvalidInput(f"output {name!r} is requested more than once")
        seen.add(name)
        parameters = _parameters(spec.get("parameters"), f"output {name!r}")
        if "shared_memory_region" in parameters:
            raise InvalidInput(
                f"output {name!r}: shared memory outputs are not supported"
            )
        if parameters.get("classification"):
            raise InvalidInput(
                f"output {name!r}: classification outputs are not supported"
            )
        binary = parameters.get("binary_data", binary_default)
        if not isinstance(binary, bool):
            raise InvalidInput(
                f"output {name!r}: parameter binary_data must be true or false"
            )
        requested.append(RequestedOutput(name=name, binary_data=binary))
    return requested


def _binary_input(
    name: str,
    view: memoryview,
    offset: int,
    size: int,
    datatype: str,
    shape: list[int],
) -> np.ndarray:
    count = math.prod(shape)
    if datatype == "BYTES":
        data = view[offset : offset + size]
        return decode_bytes(f"input {name!r}", data, count, _WORDING).reshape(shape)
    dtype = numpy_dtype(datatype)
    if size % dtype.itemsize:
        raise InvalidInput(
            f"input {name!r}: binary_data_size {size} is not a multiple of the "
            f"{datatype} element size ({dtype.itemsize} bytes)"
        )
    if size // dtype.itemsize != count:
        raise InvalidInput(
            f"input {name!r}: binary data holds {size // dtype.itemsize} elements "
            f"but shape {shape} needs {count}"
        )
    arr = np.frombuffer(view, dtype=dtype, count=count, offset=offset)
    if datatype == "BOOL" and count and int(arr.view(np.uint8).max()) > 1:
        raise InvalidInput(f"input {name!r}: BOOL bytes must be 0 or 1")
    return arr.reshape(shape)


def _binary_output(name: str, arr: np.ndarray, datatype: str) -> bytes | memoryview:
    """The v2 binary form of output ``arr``, without copying when already laid out."""
    if datatype == "BYTES":
        return encode_bytes(f"output {name!r}", arr, ModelError)
    # ascontiguousarray copies only non-contiguous arrays; the uint8 view makes the
    # memoryview's len() its size in bytes whatever the dtype.
    flat = np.ascontiguousarray(little_endian(arr)).reshape(-1)
    return flat.view(np.uint8).data
