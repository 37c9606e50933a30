"""The router's end of the direct channel: connections to one version's replicas.

A :class:`DirectChannel` knows the replicas it was last told of
(:meth:`DirectChannel.update`, fed by Serve: see :mod:`rayfleet.deployments.router`),
keeps one connection to each, and sends every call to the less loaded of two
replicas drawn at random, as Serve's own router does. A replica runs at most
``max_ongoing`` of this router's calls at once; past that, calls wait here in
order of arrival, at most ``max_queued`` of them (-1: no bound), and the next one
gets :class:`~rayfleet.platform.errors.ServiceUnavailable`, as from Serve's handle.
Connections send TCP keepalives, so a replica on a node that vanished fails its
calls over within seconds rather than at the request's deadline.

With no replica known, :meth:`DirectChannel.infer` raises :class:`NoReplica`, and
the caller takes Serve's handle instead: the channel only ever speeds a version
up, and the handle still starts a version that scaled to zero.
"""

from __future__ import annotations

import asyncio
import hmac
import random
import secrets
import socket
import time
from collections import deque
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from rayfleet.platform.errors import ModelError, RayfleetError, ServiceUnavailable
from rayfleet.platform.serving.channel.grouping import FrameSender
from rayfleet.platform.serving.channel.wire import (
    MAGIC,
    NONCE_BYTES,
    PROOF_BYTES,
    BodyError,
    Kind,
    ProtocolError,
    encode_frame,
    proof,
    read_frame,
)
from rayfleet.platform.serving.service import ReplicaResult

__all__ = [
    "ChannelClosed",
    "DirectChannel",
    "Endpoint",
    "NoReplica",
    "pick_replica",
]

CONNECT_TIMEOUT_S = 2.0
# A connection with calls on it and nothing heard for KEEPALIVE_IDLE_S is probed
# every KEEPALIVE_INTERVAL_S; KEEPALIVE_PROBES unanswered ones close it (about
# 11 s), and sent data unacknowledged for UNACKED_TIMEOUT_MS does too.
KEEPALIVE_IDLE_S = 5
KEEPALIVE_INTERVAL_S = 2
KEEPALIVE_PROBES = 3
UNACKED_TIMEOUT_MS = 11_000
# A replica that refused a connection is left alone this long, unless Serve
# reports it again after restarting it under the same id.
RETRY_CONNECT_S = 5.0


class NoReplica(Exception):
    """No replica of the version can take a call over the channel now."""


class ChannelClosed(Exception):
    """The connection ended before the reply came: the replica died or stopped."""


class _GoingAway(Exception):
    """The replica is stopping and did not run the call."""


class _Refused(Exception):
    """The replica did not take the connection; it is left alone a while."""


@dataclass(frozen=True)
class Endpoint:
    """One replica's channel: what its ``channel_address`` reports."""

    replica: str
    host: str
    port: int
    token: bytes = field(repr=False)

    @classmethod
    def from_address(cls, replica: str, address: dict[str, Any]) -> Endpoint:
        """From a replica's ``ChannelServer.address()``."""
        return cls(
            replica,
            str(address["host"]),
            int(address["port"]),
            bytes.fromhex(str(address["token"])),
        )


def pick_replica(
    loads: Sequence[int], max_ongoing: int, rng: random.Random
) -> int | None:
    """The index of the replica for the next call: of two drawn at random among
    those under ``max_ongoing``, the less loaded; ``None`` when all are full."""
    open_slots = [i for i, load in enumerate(loads) if load < max_ongoing]
    if not open_slots:
        return None
    if len(open_slots) == 1:
        return open_slots[0]
    first, second = rng.sample(open_slots, 2)
    return first if loads[first] <= loads[second] else second


def _keep_alive(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    if sock is None:
        return
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    # Linux names; elsewhere the system's defaults (hours) apply.
    for option, value in (
        ("TCP_KEEPIDLE", KEEPALIVE_IDLE_S),
        ("TCP_KEEPINTVL", KEEPALIVE_INTERVAL_S),
        ("TCP_KEEPCNT", KEEPALIVE_PROBES),
        ("TCP_USER_TIMEOUT", UNACKED_TIMEOUT_MS),
    ):
        if hasattr(socket, option):
            sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, option), value)


class _Connection:
    """One TCP connection to one replica, carrying many calls at once."""

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self._reader = reader
        # Calls made in one turn of the loop leave together (grouping module).
        self._sender = FrameSender(writer)
        self._pending: dict[int, asyncio.Future[tuple[Kind, Any]]] = {}
        self._next_id = 0
        self.closed = False
        self._reading = asyncio.create_task(self._read_replies())

    @classmethod
    async def open(cls, endpoint: Endpoint) -> _Connection:
        """Connect and prove, both ways, that each end holds the token."""
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(endpoint.host, endpoint.port), CONNECT_TIMEOUT_S
        )
        try:
            _keep_alive(writer)
            router_nonce = secrets.token_bytes(NONCE_BYTES)
            writer.write(MAGIC + router_nonce)
            try:
                answer = await asyncio.wait_for(
                    reader.readexactly(NONCE_BYTES + PROOF_BYTES), CONNECT_TIMEOUT_S
                )
            except asyncio.IncompleteReadError:
                # A replica of a release that speaks another protocol version
                # hangs up on the greeting.
                raise ConnectionRefusedError(
                    f"{endpoint.host}:{endpoint.port} closed the handshake"
                ) from None
            replica_nonce, theirs = answer[:NONCE_BYTES], answer[NONCE_BYTES:]
            expected = proof(endpoint.token, "replica", router_nonce, replica_nonce)
            if not hmac.compare_digest(theirs, expected):
                raise ConnectionRefusedError(
                    f"{endpoint.host}:{endpoint.port} is not replica {endpoint.replica}"
                )
            writer.write(proof(endpoint.token, "router", router_nonce, replica_nonce))
        except BaseException:
            writer.close()
            raise
        return cls(reader, writer)

    async def call(
        self, inputs: dict[str, np.ndarray], trace: dict[str, str] | None
    ) -> ReplicaResult:
        if self.closed:
            raise ChannelClosed("the connection is closed")
        self._next_id += 1
        request_id = self._next_id
        reply: asyncio.Future[tuple[Kind, Any]] = (
            asyncio.get_running_loop().create_future()
        )
        self._pending[request_id] = reply
        try:
            self._sender.send(encode_frame(request_id, Kind.CALL, (inputs, trace)))
            await self._sender.drain()
            kind, body = await reply
        except OSError as error:  # ConnectionError, and a timeout of the socket's
            raise ChannelClosed(f"{type(error).__name__}: {error}") from error
        except asyncio.CancelledError:
            # The caller was cancelled (its deadline passed, or Serve cancelled
            # the request): the replica drops the call if it has not run yet,
            # as Serve's handle does.
            # Cancelled while waiting, this task cancelled ``reply`` too; while
            # the call was still being sent, ``reply`` is not done yet.
            if reply.cancelled() or not reply.done():
                self._send_cancel(request_id)
            raise
        finally:
            self._pending.pop(request_id, None)
        if kind is Kind.RESULT:
            outputs, model_ms, batch_size = body
            return ReplicaResult(outputs, model_ms, batch_size)
        if kind is Kind.GOING_AWAY:
            raise _GoingAway()
        if isinstance(body, RayfleetError):
            raise body
        raise ProtocolError(f"a reply of kind {kind.name} carried {type(body)}")

    def _send_cancel(self, request_id: int) -> None:
        # On a connection that is going, the replica cancels what it runs.
        # The sender keeps it behind its call, which may not have left yet.
        if not self.closed and not self._sender.closing:
            self._sender.send(encode_frame(request_id, Kind.CANCEL, None))

    async def _read_replies(self) -> None:
        reason = "closed by the router"
        try:
            while True:
                try:
                    request_id, kind, body = await read_frame(self._reader)
                except BodyError as error:
                    # The frame was whole: only its own call fails.
                    request_id, kind = error.request_id, Kind.ERROR
                    body = ModelError(f"the router could not read the reply: {error}")
                reply = self._pending.get(request_id)
                if reply is not None and not reply.done():
                    reply.set_result((kind, body))
        except (asyncio.IncompleteReadError, OSError, ProtocolError) as error:
            reason = f"{type(error).__name__}: {error}"
        finally:
            # However reading ends, no call is left waiting on it.
            self.closed = True
            for reply in self._pending.values():
                if not reply.done():
                    reply.set_exception(
                        ChannelClosed(f"the replica went away: {reason}")
                    )
            self._sender.close()

    def close(self) -> None:
        self._reading.cancel()


class DirectChannel:
    """This router's connections to one version's replicas (see the module)."""

    def __init__(
        self,
        name: str,
        max_ongoing: int,
        max_queued: int = -1,
        *,
        attempts: int = 2,
        rng: random.Random | None = None,
    ) -> None:
        self.name = name
        self.max_ongoing = max_ongoing
        self.max_queued = max_queued
        self.attempts = attempts
        self._rng = rng if rng is not None else random.Random()
        # replica -> where it listens now. A replica Serve restarted under the
        # same id listens elsewhere: the old endpoint keeps its connection only
        # until the calls on it end.
        self._endpoints: dict[str, Endpoint] = {}
        self._loads: dict[Endpoint, int] = {}
        self._connections: dict[Endpoint, asyncio.Task[_Connection]] = {}
        self._refused_until: dict[Endpoint, float] = {}
        self._waiting: deque[asyncio.Future[None]] = deque()
        # Waiters woken for a free slot that have not run yet: a call arriving
        # meanwhile queues behind them rather than take their slot.
        self._woken = 0
        self.closed = False

    @property
    def replicas(self) -> list[str]:
        """The replicas calls can go to now (one that refused a connection
        lately is left out)."""
        return [endpoint.replica for endpoint in self._usable()]

    def update(self, endpoints: Collection[Endpoint]) -> None:
        """The replicas Serve runs now. Calls already on any other finish there
        (or fail over), then its connection closes."""
        current = {e.replica: e for e in endpoints}
        for replica, endpoint in list(self._endpoints.items()):
            if current.get(replica) != endpoint:
                self._retire(endpoint)
        for replica, endpoint in current.items():
            if replica not in self._endpoints:
                self._endpoints[replica] = endpoint
                self._loads.setdefault(endpoint, 0)
        # New replicas may have room for every waiter: each looks again.
        self._wake(everyone=True)

    def close(self) -> None:
        """Drop every connection, failing the calls on them over; from now on
        every call raises :class:`NoReplica`."""
        self.closed = True
        self._endpoints.clear()
        for endpoint in list(self._connections):
            self._disconnect(endpoint)
        self._wake(everyone=True)

    async def infer(
        self, inputs: dict[str, np.ndarray], trace: dict[str, str] | None = None
    ) -> ReplicaResult:
        """One call on the less loaded of two replicas; a replica that died with
        the call gets it sent once more elsewhere, as the handle path does.

        Raises :class:`NoReplica` when none is known (take the handle then),
        ``ServiceUnavailable`` when the wait queue is full, and the replica's
        own ``RayfleetError`` as it was raised there.
        """
        if self.closed:
            raise NoReplica(self.name)
        attempts_left = self.attempts
        # Replicas that answered "going away" or refused the connection are
        # dropped or skipped, so the rounds are bounded by how many there are.
        for _ in range(attempts_left + 2 * len(self._endpoints) + 1):
            endpoint = await self._acquire()
            try:
                connection = await self._connection(endpoint)
                return await connection.call(inputs, trace)
            except _Refused:
                pass
            except _GoingAway:
                self._retire(endpoint)
            except ChannelClosed:
                self._retire(endpoint)
                attempts_left -= 1
                if not attempts_left:
                    raise ServiceUnavailable(
                        f"{self.name}: the replica went away with the request"
                    ) from None
            finally:
                self._release(endpoint)
        raise NoReplica(self.name)

    async def _acquire(self) -> Endpoint:
        """A replica with a free slot, taking the slot; waits in order of
        arrival when all are full."""
        woken = False
        while True:
            usable = self._usable()
            if not usable:
                # The next waiter would find none either: it fails now too,
                # rather than wait for a release that may never come.
                self._wake()
                raise NoReplica(self.name)
            chosen = None
            if woken or not (self._waiting or self._woken):
                chosen = pick_replica(
                    [self._loads[e] for e in usable], self.max_ongoing, self._rng
                )
            if chosen is not None:
                endpoint = usable[chosen]
                self._loads[endpoint] += 1
                return endpoint
            if not woken and 0 <= self.max_queued <= len(self._waiting):
                raise ServiceUnavailable(
                    f"{self.name}: {len(self._waiting)} requests already wait "
                    "for a replica"
                )
            turn: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            # A waiter that found no slot after its wake-up keeps its place.
            if woken:
                self._waiting.appendleft(turn)
            else:
                self._waiting.append(turn)
            try:
                await turn
            except asyncio.CancelledError:
                if turn.done() and not turn.cancelled():
                    # Woken, but leaving: the turn goes to the next waiter.
                    self._woken -= 1
                    self._wake()
                raise
            finally:
                if not turn.done():
                    turn.cancel()
                if turn in self._waiting:
                    self._waiting.remove(turn)
            self._woken -= 1
            woken = True

    def _usable(self) -> list[Endpoint]:
        now = time.monotonic()
        return [
            e
            for e in self._endpoints.values()
            if self._refused_until.get(e, 0.0) <= now
        ]

    def _release(self, endpoint: Endpoint) -> None:
        self._loads[endpoint] -= 1
        if self._loads[endpoint] <= 0 and not self._is_current(endpoint):
            del self._loads[endpoint]
            self._disconnect(endpoint)
        self._wake()

    def _is_current(self, endpoint: Endpoint) -> bool:
        return self._endpoints.get(endpoint.replica) == endpoint

    def _wake(self, *, everyone: bool = False) -> None:
        while self._waiting:
            turn = self._waiting.popleft()
            if not turn.done():
                turn.set_result(None)
                self._woken += 1
                if not everyone:
                    return

    async def _connection(self, endpoint: Endpoint) -> _Connection:
        opening = self._connections.get(endpoint)
        if opening is None or (opening.done() and _broken(opening)):
            if not self._is_current(endpoint):
                raise _GoingAway()
            opening = asyncio.create_task(_Connection.open(endpoint))
            self._connections[endpoint] = opening
        try:
            return await asyncio.shield(opening)
        except (OSError, TimeoutError) as error:
            self._refused_until[endpoint] = time.monotonic() + RETRY_CONNECT_S
            self._connections.pop(endpoint, None)
            raise _Refused() from error
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if opening.cancelled() and not (task and task.cancelling()):
                # close() or a retirement dropped the connection being opened.
                raise _GoingAway() from None
            raise

    def _retire(self, endpoint: Endpoint) -> None:
        """No new calls to ``endpoint``; its connection closes with its last call."""
        if self._is_current(endpoint):
            del self._endpoints[endpoint.replica]
        self._refused_until.pop(endpoint, None)
        if self._loads.get(endpoint, 0) <= 0:
            self._loads.pop(endpoint, None)
            self._disconnect(endpoint)

    def _disconnect(self, endpoint: Endpoint) -> None:
        opening = self._connections.pop(endpoint, None)
        if opening is None:
            return
        if opening.done() and not _broken(opening):
            opening.result().close()
        else:
            opening.cancel()


def _broken(opening: asyncio.Task[_Connection]) -> bool:
    return (
        opening.cancelled()
        or opening.exception() is not None
        or opening.result().closed
    )
