"""Reading an IPC stream's decoded size from its metadata, without decompressing."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from rayfleet.platform.errors import InvalidInput
from rayfleet.platform.protocol import stream_decoded_bytes


def _stream(table: pa.Table, compression: str | None) -> bytes:
    sink = pa.BufferOutputStream()
    options = pa.ipc.IpcWriteOptions(compression=compression)
    with pa.ipc.new_stream(sink, table.schema, options=options) as writer:
        writer.write_table(table, max_chunksize=1000)
    stream: bytes = sink.getvalue().to_pybytes()
    return stream


@pytest.mark.parametrize("compression", [None, "lz4", "zstd"])
def test_size_is_what_the_buffers_take_once_read(compression: str | None) -> None:
    table = pa.table(
        {
            "f": pa.array(np.zeros(2500, np.float32)),
            "s": pa.array(["abc"] * 2500),
            "b": pa.array([True] * 2500),
        }
    )
    body = _stream(table, compression)
    read = pa.ipc.open_stream(body).read_all()
    # The writer pads each buffer to 8 bytes; Arrow's own count does not.
    assert abs(stream_decoded_bytes(body, "request") - read.nbytes) < 64
    if compression:
        assert len(body) < read.nbytes


def test_schema_only_stream_decodes_to_nothing() -> None:
    body = _stream(pa.table({"f": pa.array([], pa.float32())}), None)
    assert stream_decoded_bytes(body, "request") == 0


def test_garbage_is_invalid_input() -> None:
    with pytest.raises(InvalidInput, match="request body is not an Arrow IPC"):
        stream_decoded_bytes(b"not arrow", "request")


@pytest.mark.parametrize("body", [b"", b"\xff\xff\xff\xff" + b"\0" * 4])
def test_no_messages_decode_to_nothing(body: bytes) -> None:
    # The codec refuses such a body when it finds no record batch in it.
    assert stream_decoded_bytes(body, "request") == 0
