"""The direct channel's wire format: a handshake, then length-prefixed frames.

A router opens one TCP connection per replica, and each side proves that it
holds the replica's token without sending it (:func:`proof`): the router sends
:data:`MAGIC` and a nonce, the replica answers with a nonce of its own and its
proof, and the router, once it has checked that, sends its proof. Either side
closes a connection whose peer fails. After that both sides send frames, and a
connection carries many requests at once: each frame names its request, so
replies come back in whatever order the replica finishes them.

:data:`MAGIC` ends in the protocol's version: a router and a replica of rayfleet
releases that speak different versions refuse each other's handshake, and the
router sends that version's calls through Serve's handle instead, so a rolling
upgrade never mixes frames of two versions on one connection.

A frame is a :data:`HEADER` (request id, kind, body length) and a pickled body.
Pickle is safe here because only rayfleet's own processes get past the
handshake: the token is handed out through Serve's handle (see
:mod:`rayfleet.deployments.replica`), the same trust Ray's own actor calls rest
on, which pickle their arguments too. The frames are not encrypted: on a
cluster that runs Ray with TLS, keep versions on ``transport: handle``.
"""

from __future__ import annotations

import asyncio
import enum
import hashlib
import hmac
import pickle
import struct
from typing import Any, Literal

__all__ = [
    "HEADER",
    "MAGIC",
    "MAX_BODY_BYTES",
    "NONCE_BYTES",
    "PROOF_BYTES",
    "TOKEN_BYTES",
    "BodyError",
    "Kind",
    "ProtocolError",
    "encode_frame",
    "proof",
    "read_frame",
]

# Version 3 added CANCEL.
MAGIC = b"RFCH\x03"
TOKEN_BYTES = 32
NONCE_BYTES = 16
PROOF_BYTES = hashlib.sha256().digest_size
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
    # router -> replica, no body: the caller gave up (its deadline passed); drop
    # the call if it has not run yet, and send no reply
    CANCEL = 5


class ProtocolError(Exception):
    """The peer sent something that is not a frame of this protocol: the
    connection cannot be read any further."""


class BodyError(Exception):
    """A frame arrived whole but its body did not unpickle: only its request
    fails, and the connection reads on."""

    def __init__(self, request_id: int, kind: Kind, reason: str) -> None:
        super().__init__(reason)
        self.request_id = request_id
        self.kind = kind


def proof(
    token: bytes,
    role: Literal["replica", "router"],
    router_nonce: bytes,
    replica_nonce: bytes,
) -> bytes:
    """What ``role`` sends to show it holds ``token``: an HMAC of both nonces,
    so no proof can be replayed on another connection or reflected back."""
    message = role.encode() + router_nonce + replica_nonce
    return hmac.new(token, message, hashlib.sha256).digest()


def encode_frame(request_id: int, kind: Kind, body: Any) -> bytes:
    """One frame, ready for a single ``write``: one write per frame keeps the
    frames of concurrent requests from interleaving."""
    payload = pickle.dumps(body, protocol=pickle.HIGHEST_PROTOCOL)
    if len(payload) > MAX_BODY_BYTES:
        raise ValueError(f"a frame body of {len(payload)} bytes is too large")
    return HEADER.pack(request_id, kind, len(payload)) + payload


async def read_frame(reader: asyncio.StreamReader) -> tuple[int, Kind, Any]:
    """The next frame from ``reader``: request id, kind, body.

    Raises ``asyncio.IncompleteReadError`` when the connection ends,
    :class:`ProtocolError` on an unknown kind, and :class:`BodyError` on a
    body that does not unpickle.
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
        reason = f"a frame body did not unpickle: {type(error).__name__}"
        raise BodyError(request_id, kind, reason) from error
    return request_id, kind, body
