"""The direct channel: every caller gets its own answer over shared connections,
failures stay with their call, replicas that stop or die are routed around, the
wait queue is bounded, and frames survive the wire bit for bit."""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from rayfleet.platform.errors import InvalidInput, ModelError, ServiceUnavailable
from rayfleet.platform.serving.channel import (
    ChannelServer,
    DirectChannel,
    Endpoint,
    NoReplica,
    pick_replica,
)
from rayfleet.platform.serving.channel import server as server_module
from rayfleet.platform.serving.channel.wire import (
    HEADER,
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

HOST = "127.0.0.1"
# Long enough for any loopback round trip, short enough that a hang fails fast.
PATIENCE_S = 2.0


class Doubler:
    """A replica's model: ``y = 2 * x``, after ``delay()`` seconds and once
    ``gate`` is open. ``poison`` maps a first element of ``x`` to what it raises."""

    def __init__(
        self,
        *,
        delay: Callable[[], float] = lambda: 0.0,
        gated: bool = False,
        poison: dict[float, Exception] | None = None,
    ) -> None:
        self.delay = delay
        self.gate = asyncio.Event()
        if not gated:
            self.gate.set()
        self.entered = asyncio.Event()
        self.poison = poison or {}
        self.traces: list[dict[str, str] | None] = []
        self.cancelled = 0

    async def __call__(
        self, inputs: dict[str, np.ndarray], trace: dict[str, str] | None
    ) -> ReplicaResult:
        self.traces.append(trace)
        self.entered.set()
        try:
            await self.gate.wait()
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        if seconds := self.delay():
            await asyncio.sleep(seconds)
        x = inputs["x"]
        failure = self.poison.get(float(x.flat[0]))
        if failure is not None:
            raise failure
        return ReplicaResult({"y": 2 * x}, 0.5, 1)


def row(i: float) -> dict[str, np.ndarray]:
    return {"x": np.array([[i, i]], dtype=np.float32)}


def doubled(result: ReplicaResult) -> float:
    """The ``i`` of the ``row(i)`` that ``result`` answers, checking it doubled."""
    y = result.outputs["y"]
    assert y.dtype == np.float32 and y.shape == (1, 2)
    assert y[0, 0] == y[0, 1]
    return float(y[0, 0]) / 2


def endpoint(name: str, server: ChannelServer, token: bytes | None = None) -> Endpoint:
    address = server.address()
    if token is not None:
        address["token"] = token.hex()
    return Endpoint.from_address(name, address)


def wrong_token(server: ChannelServer) -> bytes:
    return bytes(b ^ 0xFF for b in server.token)


@contextlib.asynccontextmanager
async def serving(*models: Doubler) -> AsyncIterator[list[ChannelServer]]:
    """One started server per model; every connection dropped on the way out."""
    servers = [ChannelServer(model, HOST) for model in models]
    try:
        for server in servers:
            await server.start()
        yield servers
    finally:
        # Handlers left waiting on a gate would otherwise outlive the test.
        for model in models:
            model.gate.set()
        for server in servers:
            await server.close(0)
        await settle()


@contextlib.asynccontextmanager
async def channel(
    endpoints: Iterable[Endpoint],
    *,
    max_ongoing: int = 8,
    max_queued: int = -1,
    attempts: int = 2,
) -> AsyncIterator[DirectChannel]:
    direct = DirectChannel(
        "m/v", max_ongoing, max_queued, attempts=attempts, rng=random.Random(7)
    )
    direct.update(list(endpoints))
    try:
        yield direct
    finally:
        direct.close()
        await settle()


async def settle() -> None:
    """Let closing transports run their callbacks before the loop goes away."""
    for _ in range(5):
        await asyncio.sleep(0)
    await asyncio.sleep(0.01)


async def until(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + PATIENCE_S
    while not condition():
        assert time.monotonic() < deadline, "condition never held"
        await asyncio.sleep(0.005)


async def handshake(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, token: bytes
) -> bool:
    """The router's side of the handshake, by hand; whether the replica's proof
    checked out against ``token``."""
    router_nonce = bytes(NONCE_BYTES)
    writer.write(MAGIC + router_nonce)
    answer = await reader.readexactly(NONCE_BYTES + PROOF_BYTES)
    replica_nonce = answer[:NONCE_BYTES]
    writer.write(proof(token, "router", router_nonce, replica_nonce))
    expected = proof(token, "replica", router_nonce, replica_nonce)
    return answer[NONCE_BYTES:] == expected


async def closed_by_peer(reader: asyncio.StreamReader) -> bool:
    """Whether the other end closes the connection without sending anything."""
    try:
        data = await asyncio.wait_for(reader.read(), PATIENCE_S)
    except ConnectionResetError:
        return True
    return data == b""


# --- calls and their answers ---------------------------------------------------


def test_concurrent_calls_each_get_their_own_answer() -> None:
    # Random delays finish the calls in another order than they were sent, so
    # replies on the shared connection come back interleaved.
    jitter = random.Random(1)
    model = Doubler(delay=lambda: jitter.uniform(0, 0.02))

    async def scenario() -> list[float]:
        async with (
            serving(model) as [server],
            channel([endpoint("A", server)], max_ongoing=64) as direct,
        ):
            results = await asyncio.gather(*(direct.infer(row(i)) for i in range(50)))
            assert server.calls == 50
            return [doubled(result) for result in results]

    assert asyncio.run(scenario()) == list(range(50))


def test_the_trace_reaches_the_handler() -> None:
    model = Doubler()

    async def scenario() -> None:
        async with (
            serving(model) as [server],
            channel([endpoint("A", server)]) as direct,
        ):
            await direct.infer(row(1), {"traceparent": "00-abc-def-01"})
            await direct.infer(row(2))

    asyncio.run(scenario())
    assert model.traces == [{"traceparent": "00-abc-def-01"}, None]


def test_a_failing_call_fails_alone_and_the_server_keeps_serving() -> None:
    jitter = random.Random(2)
    model = Doubler(
        delay=lambda: jitter.uniform(0, 0.01),
        poison={13.0: InvalidInput("x must not be 13"), 7.0: ValueError("secret")},
    )

    async def scenario() -> None:
        async with (
            serving(model) as [server],
            channel([endpoint("A", server)], max_ongoing=64) as direct,
        ):
            outcomes = await asyncio.gather(
                *(direct.infer(row(i)) for i in range(20)), return_exceptions=True
            )
            for i, outcome in enumerate(outcomes):
                if i == 13:
                    assert type(outcome) is InvalidInput
                    assert outcome.message == "x must not be 13"
                elif i == 7:
                    assert type(outcome) is ModelError
                    # The model's own message stays in the replica's log.
                    assert "ValueError" in outcome.message
                    assert "secret" not in outcome.message
                else:
                    assert isinstance(outcome, ReplicaResult)
                    assert doubled(outcome) == i
            assert doubled(await direct.infer(row(21))) == 21
            assert direct.replicas == ["A"]

    asyncio.run(scenario())


def test_a_call_arriving_as_a_slot_frees_queues_behind_the_woken_waiter() -> None:
    # No server needed: slots are taken and freed by hand, so the newcomer's
    # first step is scheduled before the woken waiter resumes, which is the
    # order in which a busy router meets them.
    async def scenario() -> None:
        replica = Endpoint("A", HOST, 1, bytes(32))
        direct = DirectChannel("m/v", 1, rng=random.Random(7))
        direct.update([replica])
        assert await direct._acquire() == replica
        waiter = asyncio.create_task(direct._acquire())
        await asyncio.sleep(0)
        newcomer = asyncio.create_task(direct._acquire())
        direct._release(replica)
        await asyncio.sleep(0.01)
        assert waiter.done() and waiter.result() == replica
        assert not newcomer.done()
        direct._release(replica)
        assert await asyncio.wait_for(newcomer, PATIENCE_S) == replica
        direct.close()

    asyncio.run(scenario())


# --- replicas that refuse, stop or die -------------------------------------------


@pytest.mark.parametrize(("attempts", "servers"), [(2, 1), (1, 1), (2, 2)])
def test_a_wrong_token_gets_no_result(attempts: int, servers: int) -> None:
    models = [Doubler() for _ in range(servers)]

    async def scenario() -> None:
        async with serving(*models) as started:
            endpoints = [
                endpoint(f"R{i}", server, wrong_token(server))
                for i, server in enumerate(started)
            ]
            async with channel(endpoints, attempts=attempts) as direct:
                # Refused at the handshake, before any tensor left: the router
                # is told to take the handle, whatever its attempts.
                with pytest.raises(NoReplica):
                    await direct.infer(row(1))
            assert [server.calls for server in started] == [0] * servers
            assert [server.refused for server in started] == [1] * servers

    asyncio.run(scenario())


def test_a_replica_with_a_wrong_token_is_dropped_for_the_right_one() -> None:
    async def scenario() -> None:
        async with (
            serving(Doubler(), Doubler()) as [good, bad],
            channel(
                [endpoint("good", good), endpoint("bad", bad, wrong_token(bad))],
                max_ongoing=1,
            ) as direct,
        ):
            results = await asyncio.gather(*(direct.infer(row(i)) for i in range(10)))
            assert [doubled(result) for result in results] == list(range(10))
            assert (good.calls, bad.calls) == (10, 0)
            assert direct.replicas == ["good"]

    asyncio.run(scenario())


def test_calls_on_a_replica_going_away_are_sent_to_another() -> None:
    async def scenario() -> None:
        async with (
            serving(Doubler(), Doubler()) as [a, b],
            channel([endpoint("A", a), endpoint("B", b)], max_ongoing=1) as direct,
        ):
            # Two calls at once with one slot each: one connection to each.
            await asyncio.gather(direct.infer(row(0)), direct.infer(row(0)))
            assert (a.calls, b.calls) == (1, 1)
            a.stop_accepting()
            results = await asyncio.gather(*(direct.infer(row(i)) for i in range(20)))
            assert [doubled(result) for result in results] == list(range(20))
            # A answered GOING_AWAY without running anything.
            assert (a.calls, b.calls) == (1, 21)
            assert direct.replicas == ["B"]

    asyncio.run(scenario())


def test_a_replica_that_stopped_before_the_first_call_is_skipped() -> None:
    async def scenario() -> None:
        async with (
            serving(Doubler(), Doubler()) as [a, b],
            channel([endpoint("A", a), endpoint("B", b)], max_ongoing=4) as direct,
        ):
            a.stop_accepting()  # its port now refuses connections
            results = await asyncio.gather(*(direct.infer(row(i)) for i in range(20)))
            assert [doubled(result) for result in results] == list(range(20))
            assert (a.calls, b.calls) == (0, 20)

    asyncio.run(scenario())


def test_a_call_on_a_replica_that_dies_is_sent_to_another() -> None:
    stuck = Doubler(gated=True)

    async def scenario() -> None:
        async with (
            serving(stuck, Doubler()) as [a, b],
            channel([endpoint("A", a)], attempts=2) as direct,
        ):
            call = asyncio.create_task(direct.infer(row(5)))
            await asyncio.wait_for(stuck.entered.wait(), PATIENCE_S)
            direct.update([endpoint("A", a), endpoint("B", b)])
            await a.close(0)
            assert doubled(await asyncio.wait_for(call, PATIENCE_S)) == 5
            assert (a.calls, b.calls) == (1, 1)
            assert direct.replicas == ["B"]

    asyncio.run(scenario())


def test_a_closing_replica_answers_its_running_call_and_sends_new_ones_away() -> None:
    stuck = Doubler(gated=True)

    async def scenario() -> None:
        async with (
            serving(stuck, Doubler()) as [a, b],
            channel([endpoint("A", a)], attempts=2) as direct,
        ):
            running = asyncio.create_task(direct.infer(row(5)))
            await asyncio.wait_for(stuck.entered.wait(), PATIENCE_S)
            direct.update([endpoint("A", a), endpoint("B", b)])
            # What a replica's graceful shutdown does: no deadline of its own.
            closing = asyncio.create_task(a.close(None))
            await asyncio.sleep(0.05)
            assert not closing.done()
            # A call arriving on A's open connection meanwhile is answered "going
            # away" and goes to B; B may take calls picked for it too.
            later = await asyncio.gather(*(direct.infer(row(i)) for i in range(4)))
            assert [doubled(result) for result in later] == list(range(4))
            assert not running.done()
            stuck.gate.set()
            assert doubled(await asyncio.wait_for(running, PATIENCE_S)) == 5
            await asyncio.wait_for(closing, PATIENCE_S)
            # Ran once, where it started: not resent.
            assert (a.calls, b.calls) == (1, 4)

    asyncio.run(scenario())


def test_only_the_loop_a_server_started_on_counts_as_its_own() -> None:
    async def scenario() -> None:
        async with serving(Doubler()) as [server]:
            assert server.on_its_loop()

            async def elsewhere() -> bool:
                return server.on_its_loop()

            assert not await asyncio.to_thread(asyncio.run, elsewhere())
            assert not await asyncio.to_thread(server.on_its_loop)

    asyncio.run(scenario())


def test_a_call_its_caller_gives_up_on_is_cancelled_on_the_replica() -> None:
    stuck = Doubler(gated=True)

    async def scenario() -> None:
        async with (
            serving(stuck) as [a],
            channel([endpoint("A", a)], max_ongoing=1) as direct,
        ):
            # The router's deadline, or its client gone, cancels the call.
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(direct.infer(row(1)), 0.2)
            await until(lambda: stuck.cancelled == 1)
            assert (a.calls, a.cancelled, a.in_flight) == (1, 1, 0)
            # The connection and the replica's one slot serve the next call.
            stuck.gate.set()
            assert (
                doubled(await asyncio.wait_for(direct.infer(row(2)), PATIENCE_S)) == 2
            )
            assert a.cancelled == 1

    asyncio.run(scenario())


def test_a_replica_cancels_the_calls_of_a_connection_that_closed() -> None:
    stuck = Doubler(gated=True)

    async def scenario() -> None:
        async with serving(stuck) as [a]:
            reader, writer = await asyncio.open_connection(HOST, a.port)
            assert await handshake(reader, writer, a.token)
            writer.write(encode_frame(1, Kind.CALL, (row(1), None)))
            await asyncio.wait_for(stuck.entered.wait(), PATIENCE_S)
            writer.close()  # no answer could reach anyone now
            await until(lambda: stuck.cancelled == 1 and a.in_flight == 0)

    asyncio.run(scenario())


def test_a_cancel_for_a_call_not_running_is_ignored() -> None:
    async def scenario() -> None:
        async with serving(Doubler()) as [a]:
            reader, writer = await asyncio.open_connection(HOST, a.port)
            assert await handshake(reader, writer, a.token)
            writer.write(encode_frame(1, Kind.CALL, (row(1), None)))
            assert (await read_frame(reader))[:2] == (1, Kind.RESULT)
            # For a call that already answered (as when a cancel crosses the
            # answer on the wire), and for an id never used.
            writer.write(encode_frame(1, Kind.CANCEL, None))
            writer.write(encode_frame(99, Kind.CANCEL, None))
            writer.write(encode_frame(2, Kind.CALL, (row(2), None)))
            assert (await read_frame(reader))[:2] == (2, Kind.RESULT)
            assert (a.calls, a.cancelled) == (2, 0)
            writer.close()

    asyncio.run(scenario())


def test_a_replica_of_another_protocol_version_is_left_to_the_handle(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A replica of the release before CANCEL, during a rolling upgrade.
    monkeypatch.setattr(server_module, "MAGIC", b"RFCH\x02")

    async def scenario() -> None:
        async with serving(Doubler()) as [a], channel([endpoint("A", a)]) as direct:
            with pytest.raises(NoReplica):
                await direct.infer(row(1))
            assert direct.replicas == []
            assert a.calls == 0

    asyncio.run(scenario())


@pytest.mark.parametrize(
    ("attempts", "expected"),
    [
        (1, ServiceUnavailable),
        # Attempts remain but no replica does: the router takes the handle.
        (2, NoReplica),
    ],
)
def test_a_call_on_the_only_replica_that_dies_fails(
    attempts: int, expected: type[Exception]
) -> None:
    stuck = Doubler(gated=True)

    async def scenario() -> None:
        async with (
            serving(stuck) as [a],
            channel([endpoint("A", a)], attempts=attempts) as direct,
        ):
            call = asyncio.create_task(direct.infer(row(5)))
            await asyncio.wait_for(stuck.entered.wait(), PATIENCE_S)
            await a.close(0)
            with pytest.raises(expected):
                await asyncio.wait_for(call, PATIENCE_S)
            assert direct.replicas == []

    asyncio.run(scenario())


def test_no_known_replica_raises_no_replica() -> None:
    async def scenario() -> None:
        async with serving(Doubler()) as [a], channel([]) as direct:
            with pytest.raises(NoReplica):
                await direct.infer(row(1))
            direct.update([endpoint("A", a)])
            assert doubled(await direct.infer(row(1))) == 1
            direct.update([])
            assert direct.replicas == []
            with pytest.raises(NoReplica):
                await direct.infer(row(1))

    asyncio.run(scenario())


def test_a_replica_removed_by_update_finishes_its_call_first() -> None:
    slow = Doubler(gated=True)

    async def scenario() -> None:
        async with (
            serving(slow, Doubler()) as [a, b],
            channel([endpoint("A", a)]) as direct,
        ):
            call = asyncio.create_task(direct.infer(row(3)))
            await asyncio.wait_for(slow.entered.wait(), PATIENCE_S)
            direct.update([endpoint("B", b)])
            results = await asyncio.gather(*(direct.infer(row(i)) for i in range(10)))
            assert [doubled(result) for result in results] == list(range(10))
            assert (a.calls, b.calls) == (1, 10)
            # The connection to A stays up for the call still on it...
            assert a.connections == 1
            slow.gate.set()
            assert doubled(await asyncio.wait_for(call, PATIENCE_S)) == 3
            # ... and closes once it is answered.
            await until(lambda: a.connections == 0)

    asyncio.run(scenario())


# --- limits and spread -----------------------------------------------------------


def test_calls_past_the_queue_bound_are_refused_at_once() -> None:
    model = Doubler(gated=True)

    async def scenario() -> None:
        async with (
            serving(model) as [server],
            channel([endpoint("A", server)], max_ongoing=1, max_queued=1) as direct,
        ):
            running = asyncio.create_task(direct.infer(row(1)))
            await asyncio.wait_for(model.entered.wait(), PATIENCE_S)
            waiting = asyncio.create_task(direct.infer(row(2)))
            await asyncio.sleep(0.01)
            assert not waiting.done()
            assert server.in_flight == 1
            started = time.monotonic()
            with pytest.raises(ServiceUnavailable):
                await direct.infer(row(3))
            # At once, not after the running call: that one waits on the gate.
            assert time.monotonic() - started < 1.0
            model.gate.set()
            results = await asyncio.wait_for(
                asyncio.gather(running, waiting), PATIENCE_S
            )
            assert [doubled(result) for result in results] == [1, 2]
            assert server.calls == 2

    asyncio.run(scenario())


def test_every_waiter_fails_at_once_when_the_replicas_are_gone() -> None:
    model = Doubler(gated=True)

    async def scenario() -> None:
        async with (
            serving(model) as [a],
            channel([endpoint("A", a)], max_ongoing=1) as direct,
        ):
            running = asyncio.create_task(direct.infer(row(1)))
            await asyncio.wait_for(model.entered.wait(), PATIENCE_S)
            waiting = [asyncio.create_task(direct.infer(row(i))) for i in range(3)]
            await asyncio.sleep(0.01)
            direct.update([])
            # Not one waiter may be left for a release that may never come.
            outcomes = await asyncio.wait_for(
                asyncio.gather(*waiting, return_exceptions=True), PATIENCE_S
            )
            assert [type(outcome) for outcome in outcomes] == [NoReplica] * 3
            assert not running.done()
            model.gate.set()
            assert doubled(await asyncio.wait_for(running, PATIENCE_S)) == 1

    asyncio.run(scenario())


def test_a_waiter_cancelled_as_it_is_woken_passes_its_turn_on() -> None:
    model = Doubler(gated=True)

    async def scenario() -> None:
        async with (
            serving(model, Doubler()) as [a, b],
            channel([endpoint("A", a)], max_ongoing=1) as direct,
        ):
            running = asyncio.create_task(direct.infer(row(1)))
            await asyncio.wait_for(model.entered.wait(), PATIENCE_S)
            first = asyncio.create_task(direct.infer(row(2)))
            second = asyncio.create_task(direct.infer(row(3)))
            await asyncio.sleep(0.01)
            # B's free slot wakes the first waiter, cancelled (by a deadline,
            # say) before it runs: the second must get the slot, not A's call.
            direct.update([endpoint("A", a), endpoint("B", b)])
            first.cancel()
            assert doubled(await asyncio.wait_for(second, PATIENCE_S)) == 3
            assert first.cancelled()
            assert not running.done()
            assert b.calls == 1

    asyncio.run(scenario())


def test_load_spreads_over_replicas() -> None:
    models = [Doubler(delay=lambda: 0.005) for _ in range(2)]

    async def scenario() -> None:
        async with (
            serving(*models) as [a, b],
            channel([endpoint("A", a), endpoint("B", b)], max_ongoing=64) as direct,
        ):
            results = await asyncio.gather(*(direct.infer(row(i)) for i in range(200)))
            assert [doubled(result) for result in results] == list(range(200))
            assert a.calls + b.calls == 200
            assert min(a.calls, b.calls) >= 50, (a.calls, b.calls)

    asyncio.run(scenario())


# --- pick_replica ----------------------------------------------------------------

loads_and_limits = st.integers(1, 8).flatmap(
    lambda max_ongoing: st.tuples(
        st.lists(st.integers(0, max_ongoing + 2), min_size=1, max_size=12),
        st.just(max_ongoing),
    )
)


@settings(max_examples=100)
@given(case=loads_and_limits, seed=st.integers(0, 2**32 - 1))
def test_pick_replica_takes_the_less_loaded_of_two_open_replicas(
    case: tuple[list[int], int], seed: int
) -> None:
    loads, max_ongoing = case
    chosen = pick_replica(loads, max_ongoing, random.Random(seed))
    open_slots = [i for i, load in enumerate(loads) if load < max_ongoing]
    if not open_slots:
        assert chosen is None
        return
    assert chosen is not None
    assert chosen in open_slots
    others = [i for i in open_slots if i != chosen]
    if others:
        # The lesser of two sampled: some other open replica is at least as
        # loaded, so a replica strictly busier than every other open one is
        # never chosen.
        assert any(loads[chosen] <= loads[i] for i in others)
    else:
        assert chosen == open_slots[0]
    assert pick_replica(loads, max_ongoing, random.Random(seed)) == chosen


@given(
    loads=st.lists(st.integers(0, 5), min_size=2, max_size=8),
    seed=st.integers(0, 2**32 - 1),
)
def test_pick_replica_never_takes_the_strictly_busiest(
    loads: list[int], seed: int
) -> None:
    busiest = max(loads)
    if loads.count(busiest) == 1:
        assert pick_replica(loads, 10, random.Random(seed)) != loads.index(busiest)


def test_pick_replica_reaches_every_replica_but_the_busiest() -> None:
    rng = random.Random(3)
    loads = [0, 1, 2, 3]
    seen = {pick_replica(loads, 4, rng) for _ in range(500)}
    assert seen == {0, 1, 2}


# --- the wire format -------------------------------------------------------------

dtypes = st.one_of(
    hnp.boolean_dtypes(),
    hnp.integer_dtypes(),
    hnp.unsigned_integer_dtypes(),
    hnp.floating_dtypes(),
    hnp.complex_number_dtypes(),
    hnp.byte_string_dtypes(max_len=4),
    hnp.unicode_string_dtypes(max_len=4),
)
tensors = hnp.arrays(
    dtypes, hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=4)
)
bodies = st.dictionaries(st.text(max_size=8), tensors, max_size=3)
frames = st.tuples(st.integers(0, 2**64 - 1), st.sampled_from(Kind), bodies)


async def read_all(data: bytes, count: int) -> list[tuple[int, Kind, Any]]:
    """``count`` frames out of ``data``, checking nothing follows them."""
    reader = asyncio.StreamReader()
    reader.feed_data(data)
    reader.feed_eof()
    read = [await read_frame(reader) for _ in range(count)]
    with pytest.raises(asyncio.IncompleteReadError):
        await read_frame(reader)
    return read


def same_tensors(got: dict[str, np.ndarray], sent: dict[str, np.ndarray]) -> bool:
    return got.keys() == sent.keys() and all(
        got[name].dtype == sent[name].dtype
        and got[name].shape == sent[name].shape
        # Bytes, not values: NaN payloads and -0.0 must survive too.
        and got[name].tobytes() == sent[name].tobytes()
        for name in sent
    )


# Drawing tensors is slow: few examples, each with several frames and dtypes.
@settings(max_examples=30, deadline=None)
@given(sent=st.lists(frames, min_size=1, max_size=3))
def test_frames_read_back_as_written(
    sent: list[tuple[int, Kind, dict[str, np.ndarray]]],
) -> None:
    data = b"".join(encode_frame(*frame) for frame in sent)
    got = asyncio.run(read_all(data, len(sent)))
    for (got_id, got_kind, got_body), (request_id, kind, body) in zip(
        got, sent, strict=True
    ):
        assert got_id == request_id
        assert got_kind is kind
        assert same_tensors(got_body, body)


def test_a_call_frame_carries_inputs_and_trace() -> None:
    inputs = row(4)
    data = encode_frame(9, Kind.CALL, (inputs, {"traceparent": "t"}))
    [(request_id, kind, (got, trace))] = asyncio.run(read_all(data, 1))
    assert (request_id, kind, trace) == (9, Kind.CALL, {"traceparent": "t"})
    assert same_tensors(got, inputs)


@pytest.mark.parametrize("raw_kind", [0, 6, 255])
def test_an_unknown_kind_is_a_protocol_error(raw_kind: int) -> None:
    good = encode_frame(1, Kind.RESULT, None)
    bad = HEADER.pack(1, raw_kind, HEADER.unpack(good[: HEADER.size])[2])
    with pytest.raises(ProtocolError, match="unknown frame kind"):
        asyncio.run(read_all(bad + good[HEADER.size :], 1))


@settings(max_examples=30, deadline=None)
@given(frame=frames, data=st.data())
def test_a_truncated_frame_is_an_incomplete_read(
    frame: tuple[int, Kind, dict[str, np.ndarray]], data: st.DataObject
) -> None:
    encoded = encode_frame(*frame)
    cut = data.draw(st.integers(0, len(encoded) - 1))
    with pytest.raises(asyncio.IncompleteReadError):
        asyncio.run(read_all(encoded[:cut], 1))


@pytest.mark.parametrize(
    "payload",
    [b"\x00not a pickle", encode_frame(1, Kind.CALL, row(1))[HEADER.size : -1]],
    ids=["garbage", "truncated-pickle"],
)
def test_a_body_that_does_not_unpickle_fails_its_own_frame(payload: bytes) -> None:
    frame = HEADER.pack(7, Kind.CALL, len(payload)) + payload
    with pytest.raises(BodyError, match="did not unpickle") as raised:
        asyncio.run(read_all(frame, 1))
    assert (raised.value.request_id, raised.value.kind) == (7, Kind.CALL)


# --- the server's side of a connection -------------------------------------------


def test_the_server_closes_a_connection_that_sends_a_non_call_frame() -> None:
    async def scenario() -> None:
        async with serving(Doubler()) as [server]:
            reader, writer = await asyncio.open_connection(HOST, server.port)
            assert await handshake(reader, writer, server.token)
            writer.write(encode_frame(1, Kind.RESULT, ({"y": np.zeros(2)}, 1.0, 1)))
            assert await closed_by_peer(reader)
            writer.close()
            assert server.calls == 0
            # Other connections are not affected.
            async with channel([endpoint("A", server)]) as direct:
                assert doubled(await direct.infer(row(6))) == 6

    asyncio.run(scenario())


@pytest.mark.parametrize("hello", [b"", MAGIC[:3]], ids=["silent", "partial"])
def test_the_server_closes_a_connection_without_a_timely_handshake(
    monkeypatch: pytest.MonkeyPatch, hello: bytes
) -> None:
    monkeypatch.setattr(server_module, "HANDSHAKE_TIMEOUT_S", 0.05)

    async def scenario() -> None:
        async with serving(Doubler()) as [server]:
            reader, writer = await asyncio.open_connection(HOST, server.port)
            writer.write(hello)
            started = time.monotonic()
            assert await closed_by_peer(reader)
            assert time.monotonic() - started < 1.0
            writer.close()

    asyncio.run(scenario())


def test_a_router_of_another_channel_version_gets_a_proof_it_refuses() -> None:
    async def scenario() -> None:
        async with serving(Doubler()) as [server]:
            reader, writer = await asyncio.open_connection(HOST, server.port)
            router_nonce = b"n" * NONCE_BYTES
            writer.write(b"RFCH\x02" + router_nonce)
            # An answer of the right length, not a hang-up: a router before
            # version 3 reads it, finds the proof wrong and takes the handle.
            answer = await reader.readexactly(NONCE_BYTES + PROOF_BYTES)
            replica_nonce, theirs = answer[:NONCE_BYTES], answer[NONCE_BYTES:]
            assert theirs != proof(server.token, "replica", router_nonce, replica_nonce)
            assert await closed_by_peer(reader)
            writer.close()
            assert server.calls == 0

    asyncio.run(scenario())


def test_the_server_closes_a_connection_with_a_wrong_token() -> None:
    async def scenario() -> None:
        async with serving(Doubler()) as [server]:
            reader, writer = await asyncio.open_connection(HOST, server.port)
            # The replica's proof does not check out against the wrong token,
            # and the router's proof is refused.
            assert not await handshake(reader, writer, wrong_token(server))
            assert await closed_by_peer(reader)
            writer.close()
            assert server.refused == 1

    asyncio.run(scenario())


def test_a_call_that_does_not_unpickle_fails_alone_on_its_connection() -> None:
    async def scenario() -> None:
        async with serving(Doubler()) as [server]:
            reader, writer = await asyncio.open_connection(HOST, server.port)
            assert await handshake(reader, writer, server.token)
            writer.write(HEADER.pack(7, Kind.CALL, 3) + b"bad")
            request_id, kind, error = await read_frame(reader)
            assert (request_id, kind, type(error)) == (7, Kind.ERROR, ModelError)
            writer.write(encode_frame(8, Kind.CALL, (row(4), None)))
            request_id, kind, (outputs, _, _) = await read_frame(reader)
            assert (request_id, kind) == (8, Kind.RESULT)
            np.testing.assert_array_equal(outputs["y"], row(4)["x"] * 2)
            writer.close()

    asyncio.run(scenario())
