"""Grouped sends: the frames one end of the channel sends in one turn of its
event loop leave in two writes, not one each.

The first frame of a turn leaves at once, so a lone request waits for nothing
and the peer can start on it; the frames sent after it in the same turn leave
together, in one write, when the loop comes round. So requests that reach the
router together go to a replica in two writes, and the answers of one batch
come back the same way: a group costs one system call on the sending side and
one wake-up and read on the other, where each frame cost one of each. The
replica's reader takes a group's calls off its buffer in one turn, so they
queue for its batcher together and run as one batch (on an idle replica the
first frame, which arrived ahead of them, may already be running alone).

Frames keep their order and stay whole, one after another on the wire: the
peer reads them one by one, so a member that fails (a body that does not
unpickle, a model error) fails alone, and each reply finds its own caller by
its request id. Nothing waits for company: a group is what is already there
when the loop comes round. A group is cut at ``max_frames`` frames or
``max_bytes`` bytes (a frame larger than that goes alone), so a burst of large
tensors is not one unbounded write.

``loadtest/bench_channel.py`` measures the channel with and without grouping.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

__all__ = ["GROUP_MAX_BYTES", "GROUP_MAX_FRAMES", "FrameSender", "cut_groups"]

# Four batches of the default max_batch_size (16); a few megabytes is past the
# point where one system call more or less matters, and a 224x224 float32
# image (600 kB) still goes six to a write.
GROUP_MAX_FRAMES = 64
GROUP_MAX_BYTES = 4 * 2**20


def cut_groups(
    frames: Sequence[bytes], max_frames: int, max_bytes: int
) -> list[list[bytes]]:
    """``frames`` in order, cut into groups of at most ``max_frames`` frames and
    ``max_bytes`` bytes; a frame larger than ``max_bytes`` is a group of its own."""
    if max_frames < 1 or max_bytes < 1:
        raise ValueError("max_frames and max_bytes must be >= 1")
    groups: list[list[bytes]] = []
    group: list[bytes] = []
    size = 0
    for frame in frames:
        if group and (len(group) == max_frames or size + len(frame) > max_bytes):
            groups.append(group)
            group, size = [], 0
        group.append(frame)
        size += len(frame)
    if group:
        groups.append(group)
    return groups


class FrameSender:
    """One connection's outgoing frames, written a group at a time.

    :meth:`send` returns at once: the first frame of a turn of the event loop
    is written there and then, and those after it in the same turn at the
    start of the next, a group per write (with ``max_frames`` 1, each frame at
    once, as without grouping). Callers that want backpressure await
    :meth:`drain` after sending, as they would after a write. Close the
    connection with :meth:`close`, which writes what is still queued first.
    """

    def __init__(
        self,
        writer: asyncio.StreamWriter,
        max_frames: int | None = None,
        max_bytes: int | None = None,
    ) -> None:
        # The module's bounds are read here, not frozen into the signature, so
        # loadtest/bench_channel.py can turn grouping off for a whole process.
        self.max_frames = GROUP_MAX_FRAMES if max_frames is None else max_frames
        self.max_bytes = GROUP_MAX_BYTES if max_bytes is None else max_bytes
        if self.max_frames < 1 or self.max_bytes < 1:
            raise ValueError("max_frames and max_bytes must be >= 1")
        self._writer = writer
        self._queued: list[bytes] = []
        # A frame left in this turn of the loop: the next ones queue.
        self._turn_open = False
        # Frames handed to the writer, and the writes that carried them.
        self.frames = 0
        self.writes = 0

    @property
    def closing(self) -> bool:
        """Whether the connection is closing: what is sent now is dropped."""
        return self._writer.is_closing()

    def send(self, frame: bytes) -> None:
        """Write ``frame`` now if it is the first of this turn, else queue it
        for the turn's group; dropped if the connection is closing by then (the
        peer resends, or its caller hears of the close)."""
        if self._turn_open:
            self._queued.append(frame)
            return
        # The first of the turn goes now. Holding it back for company costs the
        # peer its head start: in a closed loop the two ends then take turns
        # instead of working at once (loadtest/RESULTS.md, "Grouped sends on
        # the direct channel").
        if self.max_frames > 1:
            asyncio.get_running_loop().call_soon(self.flush)
            self._turn_open = True
        self._write([frame])

    async def drain(self) -> None:
        """Wait while the connection holds more unsent bytes than its
        high-water mark: backpressure, as the stream writer's ``drain``.
        Frames still queued here for the turn's group do not count yet."""
        await self._writer.drain()

    def flush(self) -> None:
        """Write the frames queued in this turn now, a group per write; the
        next frame sent opens a new turn. Runs by itself when the loop comes
        round."""
        self._turn_open = False
        queued, self._queued = self._queued, []
        for group in cut_groups(queued, self.max_frames, self.max_bytes):
            self._write(group)

    def close(self) -> None:
        """Write what is queued, then close the connection: a frame sent
        before closing is not lost to the turn it waited for."""
        self.flush()
        self._writer.close()

    def _write(self, group: list[bytes]) -> None:
        # Checked for every group: a write that fails closes the transport,
        # and the groups after it must not refill its buffer.
        if self._writer.is_closing():
            return
        self._writer.writelines(group)
        self.writes += 1
        self.frames += len(group)
