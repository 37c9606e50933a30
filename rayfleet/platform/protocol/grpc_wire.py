"""Cutting the raw tensors out of a serialized ``ModelInferRequest`` unparsed.

Parsed by protobuf, each ``raw_input_contents`` value would be copied twice: into
protobuf's arena, and into a new ``bytes`` on every read of the field. Walking the
message's top-level fields by the protobuf wire format instead yields the raw
contents as views of the request's own bytes, and leaves protobuf only the small
rest (names, shapes, parameters) to parse.
"""

from __future__ import annotations

from typing import Final

from tritonclient.grpc import service_pb2

from rayfleet.platform.errors import InvalidInput

__all__ = ["split_raw_contents"]

# Protobuf wire types, and the field number of ModelInferRequest's raw contents.
_VARINT, _FIXED64, _LENGTH_DELIMITED, _FIXED32 = 0, 1, 2, 5
_RAW_INPUT_CONTENTS: Final[int] = (
    service_pb2.ModelInferRequest.DESCRIPTOR.fields_by_name["raw_input_contents"].number
)


def split_raw_contents(wire: bytes) -> tuple[bytes, list[memoryview]]:
    """``wire`` without its raw_input_contents fields, and those fields' values as
    views of ``wire``, in order.

    Walks the message's top-level fields with the protobuf wire format's own rules
    (a varint key of field number and wire type, then a varint, a fixed 8 or 4
    bytes, or a varint length and that many bytes); nested messages are skipped
    whole and left to protobuf. Raises InvalidInput when ``wire`` is not a
    well-formed message at this level.
    """
    view = memoryview(wire)
    size = len(view)
    raws: list[memoryview] = []
    kept: list[memoryview] = []
    position = 0
    while position < size:
        start = position
        key, position = _varint(view, position)
        number, wire_type = key >> 3, key & 7
        if wire_type == _VARINT:
            _, position = _varint(view, position)
        elif wire_type == _FIXED64:
            position += 8
        elif wire_type == _FIXED32:
            position += 4
        elif wire_type == _LENGTH_DELIMITED:
            length, position = _varint(view, position)
            if number == _RAW_INPUT_CONTENTS and position + length <= size:
                raws.append(view[position : position + length])
                position += length
                continue
            position += length
        else:
            raise InvalidInput(
                f"request is not a ModelInferRequest: field {number} has wire "
                f"type {wire_type}"
            )
        if position > size:
            raise InvalidInput("request is not a ModelInferRequest: it is truncated")
        kept.append(view[start:position])
    # Only the small fields are joined; without raw contents, nothing is.
    return (b"".join(kept) if raws else wire), raws


def _varint(view: memoryview, position: int) -> tuple[int, int]:
    """The varint at ``position`` and the position after it."""
    value = shift = 0
    while position < len(view) and shift < 64:
        byte = view[position]
        position += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, position
        shift += 7
    raise InvalidInput("request is not a ModelInferRequest: a varint is malformed")
