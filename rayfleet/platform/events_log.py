"""rayfleet's structured log lines: one JSON object per event, the kinds it writes.

Four kinds of event are written, each under a stable ``event`` value:

- :data:`ROLLOUT_DECISION` and :data:`ROLLOUT_OPERATOR_ACTION`: a rollout event of
  the Validator's own, or an operator's (:mod:`rayfleet.platform.rollout.history`);
- :data:`WEBHOOK_DELIVERY_FAILED`: a rollout event a webhook did not receive
  (:mod:`rayfleet.platform.rollout.webhooks`);
- :data:`OBSERVATIONS_DROPPED`: observations a router dropped since its last such
  line (:mod:`rayfleet.platform.serving.aggregate`).

Under Serve the lines land in the replica's log file, written in the encoding of
the application's ``logging_config``. With ``encoding: JSON`` Serve writes every
record as a JSON object, and the attributes a record is given beyond the standard
ones become fields of it: an event's fields are given that way, so they sit beside
Serve's own (time, level, replica) rather than inside the message as a string of
JSON. With the ``TEXT`` encoding Serve writes only the message, so the message is
the event as one JSON object. Which of the two the process's log handlers do is
said once for the process with :func:`set_structured`
(``rayfleet/deployments/serve_logs.py``); by default, outside Serve, the message
carries the event.

Each line is flushed through every handler the logger's records reach: Serve's
throughput preset holds a replica's records (a thousand, or until an ERROR) before
writing them, and an event should be in the file at once, not when the replica
dies. Events are rare (rollout steps, failed deliveries, one line per burst of
drops), so the flush costs nothing that matters. A field never holds a secret or
a request's payload: each writer chooses its fields for that.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from typing import Any

__all__ = [
    "EVENT_FIELD",
    "EVENT_KINDS",
    "OBSERVATIONS_DROPPED",
    "ROLLOUT_DECISION",
    "ROLLOUT_OPERATOR_ACTION",
    "WEBHOOK_DELIVERY_FAILED",
    "EventLog",
    "set_structured",
]

# The field that names an event's kind: ``grep '"event": "rollout_'`` finds the
# rollout lines in either encoding.
EVENT_FIELD = "event"

ROLLOUT_DECISION = "rollout_decision"
ROLLOUT_OPERATOR_ACTION = "rollout_operator_action"
WEBHOOK_DELIVERY_FAILED = "webhook_delivery_failed"
OBSERVATIONS_DROPPED = "observations_dropped"
EVENT_KINDS = (
    ROLLOUT_DECISION,
    ROLLOUT_OPERATOR_ACTION,
    WEBHOOK_DELIVERY_FAILED,
    OBSERVATIONS_DROPPED,
)


def _message_carries_event() -> bool:
    return False


_structured: Callable[[], bool] = _message_carries_event


def set_structured(probe: Callable[[], bool]) -> None:
    """Say, for the whole process, how its log handlers write records.

    ``probe()`` is asked at each event: True while the handlers write a record's
    extra attributes as fields of a JSON object (Serve's JSON encoding), False
    while they write only the message. A probe rather than a value, because
    Serve can change a running replica's ``logging_config`` in place.
    """
    global _structured
    _structured = probe


class EventLog:
    """Writes events to ``logger``, one JSON object per line.

    ``structured`` says how the handlers write records, as for
    :func:`set_structured`; None asks the process-wide probe.
    """

    def __init__(
        self, logger: logging.Logger, *, structured: Callable[[], bool] | None = None
    ) -> None:
        self.logger = logger
        self._structured = structured

    def write(
        self, event: str, fields: Mapping[str, Any], level: int = logging.INFO
    ) -> None:
        """Log ``fields`` as the event ``event`` at ``level`` and flush.

        ``fields`` must be JSON-ready, and none of their names may be one a log
        record already has (``name``, ``message``, ``process``, ...): Python's
        logging refuses those.
        """
        if not self.logger.isEnabledFor(level):
            return
        document = {EVENT_FIELD: event, **fields}
        structured = self._structured or _structured
        # stacklevel: the record names the line that wrote the event, not this one.
        if structured():
            self.logger.log(level, "%s", event, extra=document, stacklevel=2)
        else:
            self.logger.log(level, "%s", json.dumps(document), stacklevel=2)
        _flush(self.logger)


def _flush(log: logging.Logger) -> None:
    """Flush every handler ``log``'s records reach."""
    current: logging.Logger | None = log
    while current is not None:
        for handler in current.handlers:
            handler.flush()
        current = current.parent if current.propagate else None
