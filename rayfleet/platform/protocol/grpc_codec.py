"""KServe v2 gRPC codec: ``inference.GRPCInferenceService`` messages, as compiled in
``tritonclient.grpc.service_pb2``, to and from the protocol-neutral types.

Tensor data travels one of two ways, as the v2 gRPC spec allows:

* ``raw_input_contents`` / ``raw_output_contents``: one ``bytes`` per tensor, in
  tensor order, laid out as the binary tensor extension of the REST protocol:
  little-endian, row-major, and a BYTES tensor as its elements, each a 4-byte
  little-endian length followed by the bytes. Either every input of a request is
  raw or none is. This is what ``tritonclient.grpc`` sends and what Triton answers;
  responses here are always raw, so FP16 and BF16 (which have no typed field) and
  every other datatype come back the same way.
* typed ``contents`` (``fp32_contents``, ``int_contents``, ...), which other clients
  send. They are read strictly: values that do not fit the declared datatype (300
  for UINT8) are refused, never cast.

Raw inputs are decoded without a copy: :func:`decode_infer_request` takes the
serialized request, has :mod:`.grpc_wire` cut the raw contents out of it as views
and hands only the rest to protobuf, and ``np.frombuffer`` makes each array a
read-only view of the request's own bytes. BYTES tensors use the layout of
:mod:`.bytes_codec`.

Every problem with what a client sent raises
:class:`~rayfleet.platform.errors.InvalidInput`; :func:`grpc_status` is the one
table from rayfleet's errors to gRPC status codes.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import grpc
import numpy as np
from google.protobuf.message import DecodeError
from tritonclient.grpc import service_pb2

from rayfleet.platform.errors import (
    Conflict,
    DeadlineExceeded,
    InvalidInput,
    ModelError,
    NotFound,
    PayloadTooLarge,
    RayfleetError,
    ServiceUnavailable,
    Unauthorized,
    UnsupportedMediaType,
)
from rayfleet.platform.protocol.bytes_codec import (
    BytesWording,
    check_bytes_count,
    decode_bytes,
    encode_bytes,
)
from rayfleet.platform.protocol.datatypes import (
    element_size,
    little_endian,
    numpy_dtype,
    v2_datatype,
)
from rayfleet.platform.protocol.grpc_wire import split_raw_contents
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
    "InferCall",
    "decode_infer_request",
    "encode_infer_response",
    "grpc_status",
    "model_metadata_response",
    "raw_contents",
    "server_metadata_response",
    "set_parameters",
]

_WORDING: Final = BytesWording(
    too_small=(
        "raw_input_contents of {size} bytes is too small for {count} BYTES elements"
    ),
    ends_before="raw BYTES end before element {index}",
    overruns="BYTES element {index} of length {length} overruns raw_input_contents",
    trailing="raw BYTES have {remaining} bytes after their {count} elements",
)

# The typed field of InferTensorContents that carries each datatype; FP16 and BF16
# have none and must be sent raw.
_CONTENTS_FIELD: Final[dict[str, str]] = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}

# Most specific first: the first class an error is an instance of wins. Anything
# that is not a RayfleetError is a bug and goes out as INTERNAL, message withheld.
_GRPC_STATUS: Final[tuple[tuple[type[RayfleetError], Any], ...]] = (
    (InvalidInput, grpc.StatusCode.INVALID_ARGUMENT),
    (Unauthorized, grpc.StatusCode.UNAUTHENTICATED),
    (NotFound, grpc.StatusCode.NOT_FOUND),
    (Conflict, grpc.StatusCode.FAILED_PRECONDITION),
    (PayloadTooLarge, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (UnsupportedMediaType, grpc.StatusCode.INVALID_ARGUMENT),
    (ModelError, grpc.StatusCode.INTERNAL),
    (ServiceUnavailable, grpc.StatusCode.UNAVAILABLE),
    (DeadlineExceeded, grpc.StatusCode.DEADLINE_EXCEEDED),
)


def grpc_status(error: RayfleetError) -> Any:
    """The ``grpc.StatusCode`` a client gets for ``error``."""
    for kind, code in _GRPC_STATUS:
        if isinstance(error, kind):
            return code
    return grpc.StatusCode.INTERNAL


@dataclass(frozen=True)
class InferCall:
    """A decoded ``ModelInferRequest``: the model, the pinned version (``""`` for
    none) and the request itself."""

    model_name: str
    model_version: str
    request: InferRequest


def decode_infer_request(
    wire: bytes, *, max_decoded_bytes: int = DEFAULT_MAX_DECODED_BYTES
) -> InferCall:
    """Decode a serialized ``ModelInferRequest``.

    Takes the message as it arrived, not parsed: protobuf would copy every raw
    tensor into its arena and again into a new ``bytes`` on each read of the field,
    so the raw contents are cut out of ``wire`` here as views and only the rest (a
    few hundred bytes of names, shapes and parameters) is parsed by protobuf.

    Raises InvalidInput naming the offending input for anything malformed: a body
    that is not a ModelInferRequest, unknown datatypes, negative dimensions, a raw
    or typed payload that does not hold the shape's elements, raw contents for some
    inputs but not others. Inputs whose shapes add up to more than
    ``max_decoded_bytes`` raise PayloadTooLarge before any is built.
    """
    header, raws = split_raw_contents(wire)
    try:
        message = service_pb2.ModelInferRequest.FromString(header)
    except DecodeError as e:
        raise InvalidInput(f"request is not a ModelInferRequest: {e}") from None
    if raws and len(raws) != len(message.inputs):
        raise InvalidInput(
            f"request has {len(raws)} raw_input_contents for "
            f"{len(message.inputs)} inputs; send every input raw or none"
        )
    inputs: dict[str, np.ndarray] = {}
    datatypes: dict[str, str] = {}
    decoded = 0
    for index, tensor in enumerate(message.inputs):
        name, datatype, shape = _tensor_header(index, tensor)
        if name in inputs:
            raise InvalidInput(f"input {name!r} appears more than once")
        label = f"input {name!r}"
        decoded += decoded_bytes(shape, element_size(datatype))
        if raws and datatype == "BYTES":
            # A shape its data cannot hold is malformed rather than large; the
            # payload is copied out of the message, so it counts too.
            check_bytes_count(label, len(raws[index]), math.prod(shape), _WORDING)
            decoded += len(raws[index])
        check_decoded_bytes(label, decoded, max_decoded_bytes)
        parameters = _parameters(tensor.parameters)
        if "shared_memory_region" in parameters:
            raise InvalidInput(
                f"input {name!r}: shared memory inputs are not supported"
            )
        has_contents = bool(tensor.contents.ListFields())
        if raws:
            if has_contents:
                raise InvalidInput(
                    f"input {name!r} has both contents and raw_input_contents"
                )
            inputs[name] = _raw_array(name, raws[index], datatype, shape)
        elif has_contents:
            inputs[name] = _typed_array(name, tensor.contents, datatype, shape)
        elif math.prod(shape) == 0:
            inputs[name] = np.empty(shape, dtype=numpy_dtype(datatype))
        else:
            raise InvalidInput(f"input {name!r} has neither contents nor raw data")
        datatypes[name] = datatype
    request = InferRequest(
        inputs=inputs,
        datatypes=datatypes,
        outputs=_requested_outputs(message.outputs),
        id=message.id or None,
        parameters=_parameters(message.parameters),
        # gRPC outputs are always raw: this codec has no other way to send them.
        binary_default=True,
    )
    return InferCall(message.model_name, message.model_version, request)


def encode_infer_response(
    response: InferResponse, requested: Sequence[RequestedOutput] = ()
) -> Any:
    """Encode ``response`` as a ``ModelInferResponse`` with raw output contents.

    With ``requested`` empty every output is sent, otherwise exactly those, in that
    order. A requested name the model did not produce raises InvalidInput; an
    output no v2 datatype carries raises ModelError.
    """
    if requested:
        names = [wanted.name for wanted in requested]
        missing = [name for name in names if name not in response.outputs]
        if missing:
            raise InvalidInput(
                f"requested output {missing[0]!r} is not an output of model "
                f"{response.model_name!r}; it has {sorted(response.outputs)}"
            )
    else:
        names = list(response.outputs)
    message = service_pb2.ModelInferResponse(
        model_name=response.model_name,
        model_version=response.model_version,
        id=response.id or "",
    )
    set_parameters(message.parameters, response.parameters, ModelError)
    for name in names:
        arr = response.outputs[name]
        try:
            datatype = v2_datatype(arr)
        except InvalidInput as e:
            raise ModelError(f"output {name!r}: {e.message}") from None
        message.outputs.add(name=name, datatype=datatype, shape=arr.shape)
        message.raw_output_contents.append(
            raw_contents(name, arr, datatype, ModelError)
        )
    return message


def server_metadata_response(metadata: Mapping[str, Any]) -> Any:
    """A ``ServerMetadataResponse`` from the service's server metadata."""
    return service_pb2.ServerMetadataResponse(
        name=metadata["name"],
        version=metadata["version"],
        extensions=metadata["extensions"],
    )


def model_metadata_response(metadata: Mapping[str, Any]) -> Any:
    """A ``ModelMetadataResponse`` from the service's model metadata."""

    def tensors(specs: Sequence[Mapping[str, Any]]) -> list[Any]:
        return [
            service_pb2.ModelMetadataResponse.TensorMetadata(
                name=spec["name"], datatype=spec["datatype"], shape=spec["shape"]
            )
            for spec in specs
        ]

    return service_pb2.ModelMetadataResponse(
        name=metadata["name"],
        versions=metadata["versions"],
        platform=metadata["platform"],
        inputs=tensors(metadata["inputs"]),
        outputs=tensors(metadata["outputs"]),
    )


def _tensor_header(index: int, tensor: Any) -> tuple[str, str, list[int]]:
    name: str = tensor.name
    if not name:
        raise InvalidInput(f"inputs[{index}] has no name")
    try:
        dtype = numpy_dtype(tensor.datatype)
    except InvalidInput as e:
        raise InvalidInput(f"input {name!r}: {e.message}") from None
    shape = list(check_shape(f"input {name!r}", list(tensor.shape), dtype.itemsize))
    return name, tensor.datatype, shape


def _raw_array(
    name: str, raw: memoryview, datatype: str, shape: list[int]
) -> np.ndarray:
    count = math.prod(shape)
    if datatype == "BYTES":
        return decode_bytes(f"input {name!r}", raw, count, _WORDING).reshape(shape)
    dtype = numpy_dtype(datatype)
    if len(raw) != count * dtype.itemsize:
        raise InvalidInput(
            f"input {name!r}: raw_input_contents holds {len(raw)} bytes but shape "
            f"{shape} of {datatype} needs {count * dtype.itemsize}"
        )
    arr = np.frombuffer(raw, dtype=dtype, count=count)
    if datatype == "BOOL" and count and int(arr.view(np.uint8).max()) > 1:
        raise InvalidInput(f"input {name!r}: BOOL bytes must be 0 or 1")
    return arr.reshape(shape)


def _typed_array(
    name: str, contents: Any, datatype: str, shape: list[int]
) -> np.ndarray:
    field = _CONTENTS_FIELD.get(datatype)
    if field is None:
        raise InvalidInput(
            f"input {name!r}: {datatype} has no typed contents field; "
            "send it in raw_input_contents"
        )
    others = [f.name for f, _ in contents.ListFields() if f.name != field]
    if others:
        raise InvalidInput(
            f"input {name!r}: a {datatype} tensor carries its data in {field}, "
            f"not {others[0]}"
        )
    values = getattr(contents, field)
    count = math.prod(shape)
    if len(values) != count:
        raise InvalidInput(
            f"input {name!r}: {field} holds {len(values)} elements "
            f"but shape {shape} needs {count}"
        )
    dtype = numpy_dtype(datatype)
    if datatype == "BYTES":
        arr = np.empty(count, dtype=object)
        arr[:] = list(values)
    elif dtype.kind in "iu" and dtype.itemsize < 4:
        # INT8/16 and UINT8/16 travel in 32-bit fields: refuse what does not fit.
        wide = np.array(values, dtype=np.int64)
        info = np.iinfo(dtype)
        if count and (wide.min() < info.min or wide.max() > info.max):
            bad = wide.min() if wide.min() < info.min else wide.max()
            raise InvalidInput(
                f"input {name!r}: value {bad} does not fit {datatype} "
                f"[{info.min}, {info.max}]"
            )
        arr = wide.astype(dtype)
    else:
        arr = np.array(values, dtype=dtype)
    return arr.reshape(shape)


def raw_contents(
    name: str, arr: np.ndarray, datatype: str, error: type[RayfleetError]
) -> bytes:
    """Tensor ``name`` in the raw layout: little-endian, row-major, BYTES elements
    length-prefixed. A BYTES element that is not bytes or str raises ``error``."""
    if datatype == "BYTES":
        return encode_bytes(f"{name!r}", arr, error)
    # tobytes() is the one copy: protobuf fields take bytes, not views.
    return little_endian(arr).tobytes()


def _requested_outputs(tensors: Any) -> list[RequestedOutput]:
    requested: list[RequestedOutput] = []
    seen: set[str] = set()
    for index, tensor in enumerate(tensors):
        name: str = tensor.name
        if not name:
            raise InvalidInput(f"outputs[{index}] has no name")
        if name in seen:
            raise InvalidInput(f"output {name!r} is requested more than once")
        seen.add(name)
        parameters = _parameters(tensor.parameters)
        if "shared_memory_region" in parameters:
            raise InvalidInput(
                f"output {name!r}: shared memory outputs are not supported"
            )
        if parameters.get("classification"):
            raise InvalidInput(
                f"output {name!r}: classification outputs are not supported"
            )
        requested.append(RequestedOutput(name=name, binary_data=True))
    return requested


def _parameters(parameters: Any) -> dict[str, Any]:
    """A ``map<string, InferParameter>`` as a dict of plain values."""
    decoded: dict[str, Any] = {}
    for key, parameter in parameters.items():
        choice = parameter.WhichOneof("parameter_choice")
        decoded[key] = None if choice is None else getattr(parameter, choice)
    return decoded


def set_parameters(
    target: Any, parameters: Mapping[str, Any], error: type[RayfleetError]
) -> None:
    """Write ``parameters`` into a protobuf ``map<string, InferParameter>``.

    Values must be bool, 64-bit int (signed or unsigned), float or str; anything
    else raises ``error``.
    """
    for key, value in parameters.items():
        # bool before int: a bool is an int to isinstance.
        if isinstance(value, bool):
            target[key].bool_param = value
        elif isinstance(value, int) and -(2**63) <= value < 2**63:
            target[key].int64_param = value
        elif isinstance(value, int) and 2**63 <= value < 2**64:
            target[key].uint64_param = value
        elif isinstance(value, float):
            target[key].double_param = value
        elif isinstance(value, str):
            target[key].string_param = value
        else:
            raise error(
                f"parameter {key!r} is {value!r}; v2 parameters are bool, "
                "64-bit int, float or str"
            )
