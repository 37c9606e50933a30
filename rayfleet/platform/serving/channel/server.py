"""The replica's end of the direct channel: a TCP server that runs calls.

Serve still places the replica, scales it and checks its health; only the
tensors skip Serve's handle. Each call runs as its own task on the replica's
event loop, so requests on one connection batch together exactly as handle
calls do, and one call that fails fails alone. A call its router cancels is
cancelled here, as Serve's handle cancels a replica's task: one still queued
for a batch never runs (a model already running in a thread finishes, unread).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hmac
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np

from rayfleet.platform.errors import ModelError, RayfleetError
from rayfleet.platform.serving.channel.grouping import FrameSender
from rayfleet.platform.serving.channel.wire import (
    MAGIC,
    NONCE_BYTES,
    PROOF_BYTES,
    TOKEN_BYTES,
    BodyError,
    Kind,
    ProtocolError,
    encode_frame,
    proof,
    read_frame,
)
from rayfleet.platform.serving.service import ReplicaResult

__all__ = ["ChannelServer", "Handler"]

logger = logging.getLogger(__name__)

Handler = Callable[
    [dict[str, np.ndarray], dict[str, str] | None], Awaitable[ReplicaResult]
]

# How long a connection may take over each step of its handshake: a router on
# the same cluster answers in milliseconds, and a stranger holds a socket no
# longer than this.
HANDSHAKE_TIMEOUT_S = 2.0
# At most one warning a minute about refused connections: a port scan must not
# flood the replica's log.
REFUSED_WARN_EVERY_S = 60.0


def _forget(
    running: dict[int, asyncio.Task[None]], request_id: int, task: asyncio.Task[None]
) -> None:
    # A peer that reused an id has replaced this task's entry with its own.
    if running.get(request_id) is task:
        del running[request_id]


class ChannelServer:
    """Listens on ``host`` (port chosen by the OS) and runs each call with
    ``handler``; ``token`` is what a router must prove it holds (and this
    server proves in turn), a fresh random one unless given."""

    def __init__(self, handler: Handler, host: str, token: bytes | None = None) -> None:
        self.handler = handler
        self.host = host
        self.token = token if token is not None else secrets.token_bytes(TOKEN_BYTES)
        if len(self.token) != TOKEN_BYTES:
            raise ValueError(f"a channel token is {TOKEN_BYTES} bytes")
        self.port = 0
        self.in_flight = 0
        # Calls run over the channel since it started, answered or failed, and
        # those of them cancelled (by their router, or with their connection)
        # before they answered.
        self.calls = 0
        self.cancelled = 0
        self.stopping = False
        self._server: asyncio.Server | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._calls: set[asyncio.Task[None]] = set()
        self._senders: set[FrameSender] = set()
        self.refused = 0
        self._refused_warned_at = -REFUSED_WARN_EVERY_S

    async def start(self) -> int:
        """Start listening; returns the port."""
        self._loop = asyncio.get_running_loop()
        self._server = await asyncio.start_server(self._serve, self.host, 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    def address(self) -> dict[str, Any]:
        """Where and how to connect: what a router needs, token included."""
        return {"host": self.host, "port": self.port, "token": self.token.hex()}

    @property
    def busy(self) -> bool:
        """Whether a call is running or still writing its answer."""
        return bool(self._calls)

    @property
    def connections(self) -> int:
        """Router connections open now (past the handshake)."""
        return len(self._senders)

    def on_its_loop(self) -> bool:
        """Whether the caller runs on the event loop the server started on,
        the only one where waiting for its calls can work."""
        try:
            return asyncio.get_running_loop() is self._loop
        except RuntimeError:
            return False

    def stop_accepting(self) -> None:
        """From now on, answer calls with GOING_AWAY so routers send them to
        another replica. Calls already running go on; if the process stops
        before they end, their routers resend them."""
        self.stopping = True
        if self._server is not None:
            self._server.close()
        # Answers of calls already ended may wait for the loop's next turn: the
        # process may not see it.
        for sender in self._senders:
            sender.flush()

    async def close(self, timeout_s: float | None) -> None:
        """Stop accepting, wait up to ``timeout_s`` (``None``: as long as they
        take) for running calls to answer, then drop every connection."""
        self.stop_accepting()
        if self._calls:
            await asyncio.wait(set(self._calls), timeout=timeout_s)
        for sender in list(self._senders):
            sender.close()

    async def _serve(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        if not await self._handshake(reader, writer):
            self._refuse()
            writer.close()
            return
        # The answers of one batch finish in one turn and leave together.
        sender = FrameSender(writer)
        self._senders.add(sender)
        # This connection's calls still running, by request id (ids are the
        # router's, unique on one connection).
        running: dict[int, asyncio.Task[None]] = {}
        try:
            while True:
                try:
                    request_id, kind, body = await read_frame(reader)
                except BodyError as error:
                    failure = ModelError(
                        f"the replica could not read the call: {error}"
                    )
                    sender.send(encode_frame(error.request_id, Kind.ERROR, failure))
                    continue
                if kind is Kind.CANCEL:
                    self._cancel(running.get(request_id))
                    continue
                if kind is not Kind.CALL:
                    raise ProtocolError(
                        f"a replica takes only calls and cancels, not {kind.name}"
                    )
                if self.stopping:
                    sender.send(encode_frame(request_id, Kind.GOING_AWAY, None))
                    continue
                task = asyncio.create_task(self._call(request_id, body, sender))
                self._calls.add(task)
                running[request_id] = task
                task.add_done_callback(self._calls.discard)
                task.add_done_callback(functools.partial(_forget, running, request_id))
        except (asyncio.IncompleteReadError, ConnectionError):
            pass  # the router closed the connection
        except ProtocolError as error:
            logger.warning("direct channel: closing a connection: %s", error)
        finally:
            self._senders.discard(sender)
            sender.close()
            # Their answers could only go back on this connection; the router
            # resends elsewhere what it still wants.
            for task in list(running.values()):
                self._cancel(task)

    async def _handshake(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bool:
        """Whether the peer proved it holds the token (see the wire module)."""
        try:
            hello = await asyncio.wait_for(
                reader.readexactly(len(MAGIC) + NONCE_BYTES), HANDSHAKE_TIMEOUT_S
            )
            if not hello.startswith(MAGIC):
                if hello.startswith(MAGIC[:-1]):
                    # A router of a release with another channel version: a
                    # proof that cannot check out makes it refuse this replica
                    # and take Serve's handle (routers before version 3 read a
                    # bare hang-up as an error, not a refusal).
                    writer.write(secrets.token_bytes(NONCE_BYTES + PROOF_BYTES))
                return False
            router_nonce = hello[len(MAGIC) :]
            replica_nonce = secrets.token_bytes(NONCE_BYTES)
            mine = proof(self.token, "replica", router_nonce, replica_nonce)
            writer.write(replica_nonce + mine)
            theirs = await asyncio.wait_for(
                reader.readexactly(PROOF_BYTES), HANDSHAKE_TIMEOUT_S
            )
        except (asyncio.IncompleteReadError, TimeoutError, OSError):
            return False
        expected = proof(self.token, "router", router_nonce, replica_nonce)
        return hmac.compare_digest(theirs, expected)

    @staticmethod
    def _cancel(task: asyncio.Task[None] | None) -> None:
        # A cancel may cross the call's answer on the wire: then nothing runs.
        if task is not None and not task.done():
            task.cancel()

    def _refuse(self) -> None:
        self.refused += 1
        now = time.monotonic()
        if now - self._refused_warned_at >= REFUSED_WARN_EVERY_S:
            self._refused_warned_at = now
            # Says nothing about why: a stranger learns nothing.
            logger.warning(
                "direct channel: refused %d connection(s) that did not prove "
                "they hold the token",
                self.refused,
            )

    async def _call(self, request_id: int, body: Any, sender: FrameSender) -> None:
        self.in_flight += 1
        self.calls += 1
        try:
            inputs, trace = body
            result = await self.handler(inputs, trace)
            frame = encode_frame(
                request_id,
                Kind.RESULT,
                (result.outputs, result.model_ms, result.batch_size),
            )
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        except RayfleetError as error:
            frame = encode_frame(request_id, Kind.ERROR, type(error)(error.message))
        except Exception as error:
            # The handle path would raise it in the router as a RayTaskError and
            # answer 500; here it is a ModelError, with the replica's log saying more.
            logger.exception("direct channel: a call failed")
            failure = ModelError(f"the replica failed: {type(error).__name__}")
            frame = encode_frame(request_id, Kind.ERROR, failure)
        finally:
            self.in_flight -= 1
        if sender.closing:
            return
        sender.send(frame)
        # A router that went away resends elsewhere what it still wants.
        with contextlib.suppress(ConnectionError):
            await sender.drain()
