"""The binary layout of a BYTES tensor: each element, in row-major order, as a 4-byte
little-endian length followed by that many bytes.

The KServe v2 binary tensor extension (:mod:`.v2`) and the raw contents of the v2
gRPC protocol (:mod:`.grpc_codec`) both use it, as Triton does. The protocols differ
only in what they call the buffer a tensor came in, so each passes its own
:class:`BytesWording` for the errors.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Final

import numpy as np

from rayfleet.platform.errors import InvalidInput, RayfleetError

__all__ = ["BytesWording", "check_bytes_count", "decode_bytes", "encode_bytes"]

_LENGTH_PREFIX: Final = struct.Struct("<I")


@dataclass(frozen=True)
class BytesWording:
    """How one protocol words a malformed BYTES buffer: ``str.format`` templates.

    The placeholders are ``{size}`` (the buffer's length in bytes), ``{count}``
    (the elements its shape needs), ``{index}`` (an element), ``{length}`` (that
    element's declared length) and ``{remaining}`` (bytes left over).
    """

    too_small: str
    ends_before: str
    overruns: str
    trailing: str


def encode_bytes(label: str, arr: np.ndarray, error: type[RayfleetError]) -> bytes:
    """The elements of BYTES array ``arr``, length-prefixed and joined.

    ``str`` elements are sent as their UTF-8 bytes. Any other element that is not
    ``bytes`` raises ``error`` (the model's fault for an output, the caller's for an
    input) with a message that starts with ``label``.
    """
    parts: list[bytes] = []
    for element in arr.reshape(-1):
        if isinstance(element, str):
            element = element.encode("utf-8")
        elif not isinstance(element, bytes):
            raise error(
                f"{label}: BYTES element is {type(element).__name__}, not bytes or str"
            )
        parts.append(_LENGTH_PREFIX.pack(len(element)))
        parts.append(element)
    return b"".join(parts)


def check_bytes_count(label: str, size: int, count: int, wording: BytesWording) -> None:
    """InvalidInput when ``size`` bytes are too few to hold ``count`` elements.

    Every element costs at least its length prefix; checking this first keeps a
    huge declared shape from allocating before the data proves it wrong.
    """
    if count * _LENGTH_PREFIX.size > size:
        raise InvalidInput(
            f"{label}: {wording.too_small.format(size=size, count=count)}"
        )


def decode_bytes(
    label: str, data: memoryview, count: int, wording: BytesWording
) -> np.ndarray:
    """The ``count`` elements in ``data``, as a flat object array of ``bytes``.

    ``data`` is read in place (pass a slice of the request's own buffer); only the
    elements themselves are copied out. ``data`` must hold exactly ``count``
    elements: a short buffer, a length running past the end, or bytes left after the
    last element raise InvalidInput, worded by ``wording`` after ``label``.
    """
    size = len(data)
    check_bytes_count(label, size, count, wording)
    out = np.empty(count, dtype=object)
    position = 0
    for index in range(count):
        if position + _LENGTH_PREFIX.size > size:
            raise InvalidInput(f"{label}: {wording.ends_before.format(index=index)}")
        (length,) = _LENGTH_PREFIX.unpack_from(data, position)
        position += _LENGTH_PREFIX.size
        if position + length > size:
            overruns = wording.overruns.format(index=index, length=length)
            raise InvalidInput(f"{label}: {overruns}")
        out[index] = bytes(data[position : position + length])
        position += length
    if position != size:
        trailing = wording.trailing.format(remaining=size - position, count=count)
        raise InvalidInput(f"{label}: {trailing}")
    return out
