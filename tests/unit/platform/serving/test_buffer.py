from __future__ import annotations

import itertools
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rayfleet.platform.events_log import EventLog
from rayfleet.platform.serving.buffer import DropReport, ObservationBuffer
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


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[dict[str, Any]] = []

    def emit(self, record: logging.LogRecord) -> None:
        assert record.levelno == logging.WARNING
        self.lines.append(json.loads(record.getMessage()))


@pytest.fixture
def lines() -> Iterator[Lines]:
    log = logging.getLogger("t.drops")
    log.propagate = False
    handler = Lines()
    log.addHandler(handler)
    try:
        yield handler
    finally:
        log.removeHandler(handler)
        log.propagate = True


def report(clock: Clock, every_s: float = 30.0) -> DropReport:
    events = EventLog(logging.getLogger("t.drops"), structured=lambda: False)
    return DropReport(events, "r1", every_s, clock)


def test_a_burst_is_one_line_with_its_count_and_interval(lines: Lines) -> None:
    clock = Clock()
    drops = report(clock)
    clock.now += 1
    assert drops.update(0) is False  # nothing dropped: the window starts here
    clock.now += 0.5
    assert drops.update(7) is True
    assert lines.lines == [
        {
            "event": "observations_dropped",
            "router": "r1",
            "dropped": 7,
            "interval_s": 0.5,
            "total": 7,
        }
    ]


def test_a_flood_writes_at_most_one_line_per_interval(lines: Lines) -> None:
    clock = Clock()
    drops = report(clock, every_s=30.0)
    total = 0
    written = []
    for _ in range(480):  # a minute of drops, checked every 1/8 s
        clock.now += 0.125
        total += 50
        if drops.update(total):
            written.append(clock.now)
    assert len(written) == 2
    assert written[1] - written[0] >= 30.0
    # The first line comes at once; the second counts everything since it.
    assert [(line["dropped"], line["total"]) for line in lines.lines] == [
        (50, 50),
        (12_000, 12_050),
    ]
    assert lines.lines[1]["interval_s"] == 30.0


def test_drops_held_back_are_reported_once_the_interval_passes(lines: Lines) -> None:
    clock = Clock()
    drops = report(clock, every_s=30.0)
    drops.update(1)
    clock.now += 10
    assert drops.update(3) is False
    clock.now += 10
    assert drops.update(3) is False  # still unreported: not a clean check
    clock.now += 10
    assert drops.update(3) is True
    assert lines.lines[-1] == {
        "event": "observations_dropped",
        "router": "r1",
        "dropped": 2,
        "interval_s": 30.0,
        "total": 3,
    }


@given(
    st.lists(
        st.tuples(st.floats(min_value=0.0, max_value=20.0), st.integers(0, 1000)),
        max_size=200,
    )
)
def test_lines_are_spaced_and_account_for_every_drop(
    steps: list[tuple[float, int]],
) -> None:
    clock = Clock()
    log = logging.getLogger("t.drops.property")
    handler = Lines()
    log.addHandler(handler)
    log.propagate = False
    try:
        drops = DropReport(EventLog(log, structured=lambda: False), "r", 5.0, clock)
        total = 0
        times = []
        for wait, dropped in steps:
            clock.now += wait
            total += dropped
            if drops.update(total):
                times.append(clock.now)
    finally:
        log.removeHandler(handler)
    assert all(b - a >= 5.0 for a, b in itertools.pairwise(times))
    reported = sum(line["dropped"] for line in handler.lines)
    assert all(line["dropped"] > 0 for line in handler.lines)
    assert reported == (handler.lines[-1]["total"] if handler.lines else 0)
    assert reported <= total
