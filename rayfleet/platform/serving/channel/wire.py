"""The direct channel's wire format: a handshake, then length-prefixed frames.

A router opens one TCP connection per replica and sends :data:`MAGIC` and the
replica's token; the replica closes any connection that does not. After that
both sides send frames, and a connection carries many requests at once: each
frame names its request, so replies come back in whatever order the replica
finishes them.

A frame is a :data:`HEADER` (request id, kind, body length) and a pickled body.
Pickle is safe here because both ends are rayfleet's own processes, and only a
holder of the token (handed out through Serve's handle, see
:mod:`rayfleet.deployments.replica`) can write to a replica: the same trust Ray's
own actor calls rest on, which pickle their arguments too.
"""

from __future__ import annotations

import asyncio
import enum
import pickle
import struct
from typing import Any

__all__ = [
    "HEADER",
    "MAGIC",
    "MAX_BODY_BYTES",
    "TOKEN_BYTES",
    "Kind",
    "ProtocolError",
    "encode_frame",
    "read_frame",
]

MAGIC = b"RFCH\x01"
TOKEN_BYTES = 32
# request id, kind, body length
HEADER = struct.Struct("!QBI")
# A body past this is a corrupt length, not a tensor: the router's own
# max_body_bytes is far below it.
MAX_BODY_BYTES = 2**32 - 1


class Kind(enum.IntEnum):
    """What a frame carries."""

    # router -> replica: (inputs, trace or None)
    CALL = 1
    # replica -> router: (outputs, model_ms, batch_size)
    RESULT = 2
    # replica -> router: the RayfleetError the call raised
    ERROR = 3
    # replica -> router: it is stopping and did not run the call; send it elsewhere
    GOING_AWAY = 4


class ProtocolError(Exception):
    """The peer sent something that is not a frame of this protocol."""


def encode_frame(request_id: int, kind: Kind, body: Any) -> bytes:
    """One frame, ready for a single ``write``: one write per frame keeps the
    frames of concurrent requests from interleaving."""
    payload = pickle.dumps(body, protocol=pickle.HIGHEST_PROTOCOL)
    if len(payload) > MAX_BODY_BYTES:
        raise ValueError(f"a frame body of {len(payload)} bytes is too large")
    return HEADER.pack(request_id, kind, len(payload)) + payload


async def read_frame(reader: asyncio.StreamReader) -> tuple[int, Kind, Any]:
    """The next frame from ``reader``: request id, kind, body.

    Raises ``asyncio.IncompleteReadError`` when the connection ends and
    :class:`ProtocolError` on an unknown kind or a body that does not unpickle.
    """
    request_id, raw_kind, length = HEADER.unpack(await reader.readexactly(HEADER.size))
    payload = await reader.readexactly(length)
    try:
        kind = Kind(raw_kind)
    except ValueError:
        raise ProtocolError(f"unknown frame kind {raw_kind}") from None
    try:
        body = pickle.loads(payload)
    except Exception as error:
        raise ProtocolError(f"a frame body did not unpickle: {error!r}") from error
    return request_id, kind, body
