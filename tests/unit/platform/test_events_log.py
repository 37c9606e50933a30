"""EventLog: one JSON object per event, as the message or as the record's fields."""

from __future__ import annotations

import json
import logging
import logging.handlers
from collections.abc import Iterator

import pytest

from rayfleet.platform import events_log
from rayfleet.platform.events_log import (
    EVENT_KINDS,
    OBSERVATIONS_DROPPED,
    ROLLOUT_DECISION,
    WEBHOOK_DELIVERY_FAILED,
    EventLog,
    set_structured,
)

FIELDS = {"model": "digits", "weight": 25.0, "gates": [{"name": "error_rate"}]}


class Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def collected() -> Iterator[tuple[logging.Logger, Collect]]:
    log = logging.getLogger("t.events")
    log.setLevel(logging.INFO)
    log.propagate = False
    handler = Collect()
    log.addHandler(handler)
    try:
        yield log, handler
    finally:
        log.removeHandler(handler)
        log.propagate = True
        log.setLevel(logging.NOTSET)


@pytest.fixture
def restore_probe() -> Iterator[None]:
    probe = events_log._structured
    try:
        yield
    finally:
        set_structured(probe)


def test_the_kinds_are_distinct() -> None:
    assert len(set(EVENT_KINDS)) == 4


def test_as_text_the_message_is_the_event_as_one_json_object(
    collected: tuple[logging.Logger, Collect],
) -> None:
    log, handler = collected
    EventLog(log, structured=lambda: False).write(ROLLOUT_DECISION, FIELDS)
    (record,) = handler.records
    assert record.levelno == logging.INFO
    message = record.getMessage()
    assert "\n" not in message
    assert json.loads(message) == {"event": ROLLOUT_DECISION, **FIELDS}
    # The event comes first, and the separators are json.dumps' own, as Serve's
    # JSON encoding writes them: one grep finds a kind in either encoding.
    assert message.startswith('{"event": "rollout_decision", "model": "digits"')
    assert not hasattr(record, "model")


def test_structured_the_fields_are_the_records_own(
    collected: tuple[logging.Logger, Collect],
) -> None:
    log, handler = collected
    EventLog(log, structured=lambda: True).write(
        WEBHOOK_DELIVERY_FAILED, FIELDS, logging.WARNING
    )
    (record,) = handler.records
    assert record.levelno == logging.WARNING
    assert record.getMessage() == WEBHOOK_DELIVERY_FAILED
    assert {key: vars(record)[key] for key in ("event", *FIELDS)} == {
        "event": WEBHOOK_DELIVERY_FAILED,
        **FIELDS,
    }


def test_the_process_wide_probe_decides_unless_told(
    collected: tuple[logging.Logger, Collect], restore_probe: None
) -> None:
    log, handler = collected
    answers = iter([True, False])
    set_structured(lambda: next(answers))
    events = EventLog(log)
    events.write(OBSERVATIONS_DROPPED, {"dropped": 3})
    events.write(OBSERVATIONS_DROPPED, {"dropped": 4})
    first, second = handler.records
    assert (first.getMessage(), vars(first)["dropped"]) == (OBSERVATIONS_DROPPED, 3)
    assert json.loads(second.getMessage()) == {
        "event": OBSERVATIONS_DROPPED,
        "dropped": 4,
    }


def test_nothing_below_the_loggers_level(
    collected: tuple[logging.Logger, Collect],
) -> None:
    log, handler = collected
    log.setLevel(logging.WARNING)
    EventLog(log).write(ROLLOUT_DECISION, FIELDS)
    assert handler.records == []


def test_each_event_is_flushed_through_a_buffering_handler() -> None:
    """Serve's throughput preset holds a thousand records before writing them."""
    log = logging.getLogger("t.events.buffered")
    log.setLevel(logging.INFO)
    target = logging.handlers.BufferingHandler(capacity=10_000)
    buffered = logging.handlers.MemoryHandler(
        capacity=1000, flushLevel=logging.ERROR, target=target
    )
    # On the parent: records that propagate are flushed there too.
    parent = logging.getLogger("t.events")
    parent.addHandler(buffered)
    try:
        log.info("before")
        EventLog(log, structured=lambda: False).write(ROLLOUT_DECISION, FIELDS)
    finally:
        parent.removeHandler(buffered)
        log.setLevel(logging.NOTSET)
    assert [r.getMessage()[:8] for r in target.buffer] == ["before", '{"event"']
