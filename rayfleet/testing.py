"""Client encoders and fakes for tests and benchmarks; the server does not use it.

No product module may import this one (the architecture test holds that). What is
here is the client side of protocols whose server side is in
:mod:`rayfleet.platform.protocol`: building Arrow and gRPC requests, reading Arrow
responses. They share the server's layout code, so a round trip through them checks
the codec against itself; the protocol tests also check it against tritonclient and
pyarrow directly. A fake or helper that several test files need belongs here too.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from tritonclient.grpc import service_pb2

from rayfleet.platform.errors import InvalidInput
from rayfleet.platform.protocol.arrow import read_arrow_stream, write_arrow_stream
from rayfleet.platform.protocol.datatypes import v2_datatype
from rayfleet.platform.protocol.grpc_codec import raw_contents, set_parameters

__all__ = [
    "decode_arrow_response",
    "encode_arrow_request",
    "encode_infer_request",
]


def encode_arrow_request(
    inputs: Mapping[str, np.ndarray], *, request_id: str | None = None
) -> bytes:
    """``inputs`` as an Arrow IPC request body, with ``request_id`` as its ``id``.

    Raises InvalidInput when the inputs cannot form one record batch.
    """
    metadata = {} if request_id is None else {b"id": request_id.encode("utf-8")}
    return write_arrow_stream(inputs, metadata, "request")


def decode_arrow_response(body: bytes) -> dict[str, np.ndarray]:
    """The named output arrays of an Arrow IPC response body."""
    arrays, _, _ = read_arrow_stream(body, "response")
    return arrays


def encode_infer_request(
    model: str,
    inputs: Mapping[str, np.ndarray],
    *,
    version: str = "",
    outputs: Sequence[str] = (),
    request_id: str | None = None,
    parameters: Mapping[str, Any] | None = None,
) -> Any:
    """A ``ModelInferRequest`` with raw input contents, as tritonclient builds one.

    Raises InvalidInput for an array no v2 datatype carries, a BYTES element that
    is neither bytes nor str, or a parameter v2 cannot carry.
    """
    message = service_pb2.ModelInferRequest(
        model_name=model, model_version=version, id=request_id or ""
    )
    set_parameters(message.parameters, parameters or {}, InvalidInput)
    for name, arr in inputs.items():
        datatype = v2_datatype(arr)
        message.inputs.add(name=name, datatype=datatype, shape=arr.shape)
        raw = raw_contents(name, arr, datatype, InvalidInput)
        message.raw_input_contents.append(raw)
    for name in outputs:
        message.outputs.add(name=name)
    return message
