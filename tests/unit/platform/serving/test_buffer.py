from __future__ import annotations

from rayfleet.platform.serving.buffer import ObservationBuffer
from rayfleet.platform.validation.observation import Observation


def observation(i: int) -> Observation:
    return Observation("m", "v1", float(i), 1.0, 0.5, 200)


def test_drains_oldest_first_in_batches() -> None:
    buffer = ObservationBuffer(10)
    for i in range(5):
        buffer.record(observation(i))
    assert [row[2] for row in buffer.drain(3)] == [0.0, 1.0, 2.0]
    assert [row[2] for row in buffer.drain(10)] == [3.0, 4.0]
    assert buffer.drain(10) == []


def test_full_buffer_drops_and_counts() -> None:
    buffer = ObservationBuffer(3)
    for i in range(5):
        buffer.record(observation(i))
    assert len(buffer) == 3
    assert buffer.dropped == 2
    buffer.lose(len(buffer.drain(3)))
    assert buffer.dropped == 5
