"""How many bytes an Arrow IPC stream's buffers take once read, before any is.

pyarrow decompresses a record batch's buffers (LZ4 or ZSTD) as it reads the batch,
with no bound: a few kilobytes can expand to gigabytes. Each message's metadata (a
flatbuffer) lists its body's buffers, and a compressed buffer starts with its
uncompressed length, so the decoded size is known from a few reads without
decompressing anything. pyarrow exposes the metadata only as bytes, so this module
reads the handful of flatbuffer fields it needs itself, bounds-checking every read.

Field numbers follow Arrow's ``Message.fbs``: ``Message`` {version, header_type,
header, bodyLength, ...}, ``RecordBatch`` {length, nodes, buffers, compression,
...}, ``DictionaryBatch`` {id, data, isDelta}, and ``Buffer`` is a struct of two
int64 (offset, length).
"""

from __future__ import annotations

import struct
from typing import Final

import pyarrow as pa

from rayfleet.platform.errors import InvalidInput

__all__ = ["stream_decoded_bytes"]

_DICTIONARY_BATCH: Final = 2
_RECORD_BATCH: Final = 3
_MESSAGE_HEADER_TYPE, _MESSAGE_HEADER = 1, 2
_BATCH_BUFFERS, _BATCH_COMPRESSION = 2, 3
_DICTIONARY_DATA: Final = 1
_BUFFER: Final = struct.Struct("<qq")
_UNCOMPRESSED: Final = -1


def stream_decoded_bytes(body: bytes, what: str) -> int:
    """The bytes every buffer of the IPC stream ``body`` takes once decompressed.

    Raises InvalidInput (naming ``what``, ``"request"`` or ``"response"``) when the
    stream or a message's metadata is malformed.
    """
    total = 0
    try:
        reader = pa.ipc.MessageReader.open_stream(pa.py_buffer(body))
        for message in reader:
            metadata = message.metadata
            if metadata is None:
                continue
            total += _message_body_bytes(memoryview(metadata), memoryview(message.body))
    except (pa.ArrowException, OSError) as e:
        raise InvalidInput(f"{what} body is not an Arrow IPC stream: {e}") from e
    except _Malformed as e:
        raise InvalidInput(f"Arrow {what} has malformed message metadata: {e}") from e
    return total


class _Malformed(Exception):
    """A flatbuffer read falls outside its buffer."""


def _message_body_bytes(metadata: memoryview, body: memoryview) -> int:
    message = _read(metadata, "<I", 0)
    kind = _scalar(metadata, message, _MESSAGE_HEADER_TYPE, "<B")
    header = _child(metadata, message, _MESSAGE_HEADER)
    if header is None or kind not in (_RECORD_BATCH, _DICTIONARY_BATCH):
        return 0
    batch = header
    if kind == _DICTIONARY_BATCH:
        data = _child(metadata, header, _DICTIONARY_DATA)
        if data is None:
            return 0
        batch = data
    compressed = _field(metadata, batch, _BATCH_COMPRESSION) is not None
    total = 0
    for offset, length in _buffers(metadata, batch):
        if offset < 0 or length < 0 or offset + length > len(body):
            raise _Malformed(f"buffer [{offset}, +{length}) is outside the body")
        if not compressed or length == 0:
            total += length
            continue
        # A compressed buffer is its uncompressed length (-1: stored as is), then
        # the data.
        if length < 8:
            raise _Malformed(f"compressed buffer of {length} bytes has no length")
        uncompressed = _read(body, "<q", offset)
        total += length - 8 if uncompressed == _UNCOMPRESSED else uncompressed
        if uncompressed < _UNCOMPRESSED:
            raise _Malformed(f"negative uncompressed length {uncompressed}")
    return total


def _buffers(metadata: memoryview, batch: int) -> list[tuple[int, int]]:
    vector = _child(metadata, batch, _BATCH_BUFFERS)
    if vector is None:
        return []
    count = _read(metadata, "<I", vector)
    start = vector + 4
    if start + count * _BUFFER.size > len(metadata):
        raise _Malformed("buffer list runs past the metadata")
    return [
        _BUFFER.unpack_from(metadata, start + i * _BUFFER.size) for i in range(count)
    ]


def _read(buffer: memoryview, fmt: str, position: int) -> int:
    size = struct.calcsize(fmt)
    if position < 0 or position + size > len(buffer):
        raise _Malformed(f"read at {position} is outside {len(buffer)} bytes")
    value: int = struct.unpack_from(fmt, buffer, position)[0]
    return value


def _field(metadata: memoryview, table: int, index: int) -> int | None:
    """Where field ``index`` of ``table`` is stored, or None when it is absent."""
    vtable = table - _read(metadata, "<i", table)
    entry = 4 + 2 * index
    if entry >= _read(metadata, "<H", vtable):
        return None
    offset = _read(metadata, "<H", vtable + entry)
    return table + offset if offset else None


def _scalar(metadata: memoryview, table: int, index: int, fmt: str) -> int:
    position = _field(metadata, table, index)
    return 0 if position is None else _read(metadata, fmt, position)


def _child(metadata: memoryview, table: int, index: int) -> int | None:
    """Where the table or vector that field ``index`` of ``table`` points to
    starts, if the field is present; every later read there is bounds-checked."""
    position = _field(metadata, table, index)
    if position is None:
        return None
    return position + _read(metadata, "<I", position)
