"""Grouped sends on the direct channel: the first frame of a loop turn leaves
at once and the rest of the turn in one write within the count and byte
bounds, in order and whole, and closing writes what is queued first; over a
real channel, calls made together run as one batch on the replica, every caller
gets its own answer, and a failing member fails alone."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator, Sequence

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from rayfleet.platform.errors import InvalidInput
from rayfleet.platform.serving.batcher import DynamicBatcher
from rayfleet.platform.serving.channel import ChannelServer
from rayfleet.platform.serving.channel.grouping import FrameSender, cut_groups
from rayfleet.platform.serving.channel.wire import Kind, encode_frame, read_frame
from rayfleet.platform.serving.service import ReplicaResult
from tests.unit.platform.serving.test_channel import channel, endpoint, settle

HOST = "127.0.0.1"
PATIENCE_S = 2.0

# --- cut_groups ------------------------------------------------------------------


def test_groups_are_cut_at_the_count_and_byte_bounds() -> None:
    frames = [b"aaa", b"bbb", b"ccc", b"d" * 10, b"e"]
    assert cut_groups(frames, max_frames=2, max_bytes=7) == [
        [b"aaa", b"bbb"],  # a third would make three frames
        [b"ccc"],  # the next would make 13 bytes
        [b"d" * 10],  # larger than the bound: alone
        [b"e"],
    ]


@pytest.mark.parametrize(("max_frames", "max_bytes"), [(0, 10), (1, 0), (-1, -1)])
def test_bounds_below_one_are_refused(max_frames: int, max_bytes: int) -> None:
    with pytest.raises(ValueError, match=">= 1"):
        cut_groups([b"x"], max_frames, max_bytes)


@given(
    frames=st.lists(st.binary(min_size=0, max_size=40), max_size=40),
    max_frames=st.integers(1, 8),
    max_bytes=st.integers(1, 100),
)
def test_groups_keep_every_frame_in_order_within_the_bounds(
    frames: list[bytes], max_frames: int, max_bytes: int
) -> None:
    groups = cut_groups(frames, max_frames, max_bytes)
    assert [frame for group in groups for frame in group] == frames
    for group in groups:
        assert 1 <= len(group) <= max_frames
        assert len(group) == 1 or sum(map(len, group)) <= max_bytes
    # No group is cut early: the next group's first frame would not have fit.
    for group, following in itertools.pairwise(groups):
        assert (
            len(group) == max_frames
            or sum(map(len, group)) + len(following[0]) > max_bytes
        )


# --- FrameSender on a real connection ------------------------------------------


@contextlib.asynccontextmanager
async def connected(
    max_frames: int = 64, max_bytes: int = 1 << 20
) -> AsyncIterator[tuple[FrameSender, asyncio.StreamWriter, asyncio.StreamReader]]:
    """A sender on one end of a loopback connection (with that end's writer),
    and a reader on the other."""
    accepted: asyncio.Future[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = (
        asyncio.get_running_loop().create_future()
    )

    async def accept(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        accepted.set_result((reader, writer))

    server = await asyncio.start_server(accept, HOST, 0)
    port = server.sockets[0].getsockname()[1]
    _, writer = await asyncio.open_connection(HOST, port)
    reader, peer = await asyncio.wait_for(accepted, PATIENCE_S)
    try:
        yield FrameSender(writer, max_frames, max_bytes), writer, reader
    finally:
        writer.close()
        peer.close()
        server.close()
        await settle()


def numbered(count: int, size: int = 10) -> list[bytes]:
    return [encode_frame(i, Kind.CALL, bytes(size)) for i in range(count)]


async def next_turn() -> None:
    """Return once the loop has come round: the turn's group has left."""
    await asyncio.sleep(0)


async def received(reader: asyncio.StreamReader, count: int) -> list[int]:
    frames = [
        await asyncio.wait_for(read_frame(reader), PATIENCE_S) for _ in range(count)
    ]
    return [request_id for request_id, _, _ in frames]


def test_the_first_frame_of_a_turn_leaves_at_once_and_the_rest_as_one_write() -> None:
    async def scenario() -> None:
        async with connected() as (sender, _, reader):
            frames = numbered(10)
            sender.send(frames[0])
            assert (sender.frames, sender.writes) == (1, 1)  # no wait for company
            for frame in frames[1:]:
                sender.send(frame)
            assert sender.writes == 1  # the rest leave when the loop comes round
            await next_turn()
            assert (sender.frames, sender.writes) == (10, 2)
            assert await received(reader, 10) == list(range(10))

    asyncio.run(scenario())


def test_a_group_is_cut_at_its_bounds() -> None:
    async def scenario() -> None:
        frame_bytes = len(numbered(1)[0])
        async with connected(max_frames=4) as (sender, _, reader):
            for frame in numbered(10):
                sender.send(frame)
            await next_turn()
            assert (sender.frames, sender.writes) == (10, 4)  # 1, then 4 + 4 + 1
            assert await received(reader, 10) == list(range(10))
        async with connected(max_bytes=3 * frame_bytes) as (sender, _, reader):
            for frame in numbered(7):
                sender.send(frame)
            await next_turn()
            assert (sender.frames, sender.writes) == (7, 3)  # 1, then 3 + 3
            assert await received(reader, 7) == list(range(7))

    asyncio.run(scenario())


def test_with_groups_of_one_every_frame_leaves_at_once() -> None:
    async def scenario() -> None:
        async with connected(max_frames=1) as (sender, _, reader):
            for count, frame in enumerate(numbered(5), start=1):
                sender.send(frame)
                assert (sender.frames, sender.writes) == (count, count)
            assert await received(reader, 5) == list(range(5))

    asyncio.run(scenario())


def test_each_turn_starts_its_own_group() -> None:
    async def scenario() -> None:
        async with connected() as (sender, _, reader):
            frames = numbered(5)
            sender.send(frames[0])
            sender.send(frames[1])
            await next_turn()
            sender.send(frames[2])
            sender.send(frames[3])
            sender.send(frames[4])
            await next_turn()
            # Each turn: its first frame, then the rest as one write.
            assert (sender.frames, sender.writes) == (5, 4)
            assert await received(reader, 5) == list(range(5))

    asyncio.run(scenario())


def test_frames_sent_as_the_connection_closes_are_dropped_not_raised() -> None:
    async def scenario() -> None:
        async with connected() as (sender, writer, _):
            writer.close()
            assert sender.closing
            for frame in numbered(3):
                sender.send(frame)
            await next_turn()
            assert (sender.frames, sender.writes) == (0, 0)

    asyncio.run(scenario())


def test_closing_writes_what_is_queued_first() -> None:
    async def scenario() -> None:
        async with connected() as (sender, _, reader):
            for frame in numbered(3):
                sender.send(frame)
            sender.close()  # in the same turn: two of them are still queued
            assert (sender.frames, sender.writes) == (3, 2)
            assert await received(reader, 3) == [0, 1, 2]
            assert await reader.read() == b""  # then the connection ends

    asyncio.run(scenario())


# --- grouped calls over the channel --------------------------------------------


class BatchedDoubler:
    """A replica whose calls go through rayfleet's batcher: ``y = 2 * x`` for
    each row, except that a row starting with ``poison`` fails on its own."""

    def __init__(self, poison: float | None = None) -> None:
        self.poison = poison
        self.batch_sizes: list[int] = []
        self.batcher: DynamicBatcher[np.ndarray, ReplicaResult] = DynamicBatcher(
            self._run, max_batch_size=64, max_wait_s=0.0
        )

    async def _run(
        self, rows: list[np.ndarray]
    ) -> Sequence[ReplicaResult | BaseException]:
        self.batch_sizes.append(len(rows))
        return [
            InvalidInput(f"row {x.flat[0]:g} is poison")
            if x.flat[0] == self.poison
            else ReplicaResult({"y": 2 * x}, 0.1, len(rows))
            for x in rows
        ]

    async def __call__(
        self, inputs: dict[str, np.ndarray], trace: dict[str, str] | None
    ) -> ReplicaResult:
        return await self.batcher.submit(inputs["x"])


async def grouped_calls(
    model: BatchedDoubler, count: int
) -> list[ReplicaResult | BaseException]:
    """``count`` calls made in one turn over a fresh channel to ``model``."""
    server = ChannelServer(model, HOST)
    await server.start()
    try:
        async with channel([endpoint("A", server)], max_ongoing=count) as direct:
            return await asyncio.gather(
                *(
                    direct.infer({"x": np.full((1, 2), i, dtype=np.float32)})
                    for i in range(count)
                ),
                return_exceptions=True,
            )
    finally:
        model.batcher.close()
        await server.close(0)
        await settle()


def test_calls_made_together_run_as_one_batch_and_each_caller_gets_its_own() -> None:
    model = BatchedDoubler()
    outcomes = asyncio.run(grouped_calls(model, 16))
    assert model.batch_sizes == [16]
    for i, outcome in enumerate(outcomes):
        assert isinstance(outcome, ReplicaResult)
        np.testing.assert_array_equal(outcome.outputs["y"], np.full((1, 2), 2 * i))
        assert outcome.batch_size == 16


def test_a_failing_member_of_a_group_fails_alone() -> None:
    model = BatchedDoubler(poison=5.0)
    outcomes = asyncio.run(grouped_calls(model, 12))
    assert model.batch_sizes == [12]
    for i, outcome in enumerate(outcomes):
        if i == 5:
            assert type(outcome) is InvalidInput
            assert outcome.message == "row 5 is poison"
        else:
            assert isinstance(outcome, ReplicaResult)
            np.testing.assert_array_equal(outcome.outputs["y"], np.full((1, 2), 2 * i))
