"""Wire formats: KServe v2 (JSON and binary tensors), v1 ``:predict``, Arrow IPC,
and KServe v2 over gRPC.

Each codec decodes into :class:`InferRequest` and encodes from
:class:`InferResponse`, raising :class:`~rayfleet.platform.errors.InvalidInput` for
anything wrong with what a client sent. One idea per module:

- :mod:`.types`: the protocol-neutral request and response.
- :mod:`.datatypes`: v2 datatypes, their numpy dtypes, and JSON tensor values.
- :mod:`.bytes_codec`: the length-prefixed binary layout of BYTES tensors.
- :mod:`.jsonio`: JSON bodies read and written by orjson, with the standard
  library's meaning.
- :mod:`.limits`: what a decoded input may be (rank, dimensions, decoded bytes),
  checked by every codec before numpy sees it.
- :mod:`.v2`: the v2 REST codec with the binary tensor extension.
- :mod:`.v1`: the TF-Serving / KServe v1 ``:predict`` codec.
- :mod:`.arrow`: the Arrow IPC stream codec, and :mod:`.arrow_sizes`, which reads
  how large a stream's buffers are once decompressed, before they are.
- :mod:`.grpc_codec`: v2 gRPC messages and status codes, and :mod:`.grpc_wire`,
  which cuts raw tensors out of a serialized request without a copy.

Import from here, except for the two gRPC modules: they load ``grpc`` and
``tritonclient.grpc``, which the HTTP path and the rest of the core do not need, so
their names are imported from the modules themselves. The other modules' own
``__all__`` lists are the names below.

The client side of these protocols (request encoders, response decoders for tests
and benchmarks) is in :mod:`rayfleet.testing`, not here.
"""

from __future__ import annotations

from rayfleet.platform.protocol.arrow import (
    ARROW_CONTENT_TYPE,
    ArrowDirection,
    decode_arrow_request,
    encode_arrow_response,
    read_arrow_stream,
    write_arrow_stream,
)
from rayfleet.platform.protocol.arrow_sizes import stream_decoded_bytes
from rayfleet.platform.protocol.bytes_codec import (
    BytesWording,
    check_bytes_count,
    decode_bytes,
    encode_bytes,
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
from rayfleet.platform.protocol.jsonio import dump_json, load_json
from rayfleet.platform.protocol.limits import (
    DEFAULT_MAX_DECODED_BYTES,
    INT64_MAX,
    MAX_RANK,
    check_decoded_bytes,
    check_shape,
    decoded_bytes,
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
    parse_header_length,
)

__all__ = [
    "ARROW_CONTENT_TYPE",
    "DATATYPES",
    "DEFAULT_MAX_DECODED_BYTES",
    "INT64_MAX",
    "MAX_RANK",
    "ArrowDirection",
    "BytesWording",
    "EncodedResponse",
    "InferRequest",
    "InferResponse",
    "RequestedOutput",
    "array_from_json",
    "array_to_json",
    "check_bytes_count",
    "check_decoded_bytes",
    "check_shape",
    "decode_arrow_request",
    "decode_bytes",
    "decode_request",
    "decode_v1_request",
    "decoded_bytes",
    "dump_json",
    "element_size",
    "encode_arrow_response",
    "encode_bytes",
    "encode_response",
    "encode_v1_response",
    "little_endian",
    "load_json",
    "numpy_dtype",
    "parse_header_length",
    "read_arrow_stream",
    "stream_decoded_bytes",
    "v2_datatype",
    "write_arrow_stream",
]
