"""Wire formats: KServe v2 (JSON and binary tensors), v1 ``:predict``, Arrow IPC.

Each codec decodes into :class:`InferRequest` and encodes from
:class:`InferResponse`, raising :class:`~rayfleet.platform.errors.InvalidInput` for
anything wrong with what a client sent.
"""

from __future__ import annotations

from rayfleet.platform.protocol.arrow import (
    ARROW_CONTENT_TYPE,
    decode_arrow_request,
    decode_arrow_response,
    encode_arrow_request,
    encode_arrow_response,
)
from rayfleet.platform.protocol.datatypes import (
    DATATYPES,
    array_from_json,
    array_to_json,
    element_size,
    little_endian,
    numpy_dtype,
    v2_datatype,
)
from rayfleet.platform.protocol.types import (
    InferRequest,
    InferResponse,
    RequestedOutput,
)
from rayfleet.platform.protocol.v1 import decode_v1_request, encode_v1_response
from rayfleet.platform.protocol.v2 import (
    EncodedResponse,
    decode_request,
    encode_response,
)

__all__ = [
    "ARROW_CONTENT_TYPE",
    "DATATYPES",
    "EncodedResponse",
    "InferRequest",
    "InferResponse",
    "RequestedOutput",
    "array_from_json",
    "array_to_json",
    "decode_arrow_request",
    "decode_arrow_response",
    "decode_request",
    "decode_v1_request",
    "element_size",
    "encode_arrow_request",
    "encode_arrow_response",
    "encode_response",
    "encode_v1_response",
    "little_endian",
    "numpy_dtype",
    "v2_datatype",
]
