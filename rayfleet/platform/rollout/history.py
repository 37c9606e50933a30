"""Every rollout decision on record: an append-only history per model, and a log line.

Each :class:`~rayfleet.platform.rollout.machine.Event` (a rollout started, a step
advanced, a promotion, a rollback, an operator's pause, resume or weight) becomes
one :class:`HistoryEntry`: when, which canary over which stable, the phase and
weight it left, the reason, the gate results that caused it, and for an
operator's action the :class:`Caller`. :class:`RolloutHistory` appends it to
the :class:`~rayfleet.platform.rollout.state_store.StateStore` (the store's
``_history/{app}/{model}/`` in production, beside ``_state/``) through the
controller's :class:`~rayfleet.platform.rollout.store_writer.StoreWriter`, so the
record outlives the next rollout, a Validator restart and a redeploy; and writes it
at once as one JSON line at INFO to the Validator's log
(:class:`~rayfleet.platform.events_log.EventLog`), under a stable ``event`` key
(:data:`DECISION_EVENT` or :data:`OPERATOR_EVENT`).

Recording never stands in a rollout's way: an entry the store refuses, or the
writer drops, is logged and counted (:attr:`RolloutHistory.write_failures`), and
the rollout goes on.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import TypeAdapter, ValidationError

from rayfleet.platform.config.rollout import EventKind
from rayfleet.platform.events_log import (
    ROLLOUT_DECISION,
    ROLLOUT_OPERATOR_ACTION,
    EventLog,
)
from rayfleet.platform.rollout.machine import Event, Phase
from rayfleet.platform.rollout.state_store import StateStore
from rayfleet.platform.rollout.store_writer import StoreWriter, SynchronousWriter
from rayfleet.platform.thresholds import GateResult, Verdict

__all__ = [
    "ACTOR_HEADER",
    "CALLER_MAX_CHARS",
    "DECISION_EVENT",
    "DEFAULT_HISTORY_LIMIT",
    "MAX_HISTORY_LIMIT",
    "OPERATOR_EVENT",
    "READ_FLUSH_S",
    "Caller",
    "HistoryEntry",
    "RolloutHistory",
    "sanitise",
]

logger = logging.getLogger(__name__)

# The request header naming who acts; ``rayfleet rollout`` sends ``$USER@host``.
# The admin token is shared, so this is the caller's word, not an identity.
ACTOR_HEADER = "x-rayfleet-actor"

# A login name (at most 32 characters on Linux) at a fully qualified host name
# (at most 253) fits; longer text is cut, not refused: it only annotates a record.
CALLER_MAX_CHARS = 32 + 1 + 253

# The stable ``event`` values of the log lines: the Validator's own decisions, and
# operators' actions through the admin routes.
DECISION_EVENT = ROLLOUT_DECISION
OPERATOR_EVENT = ROLLOUT_OPERATOR_ACTION

# How many entries a read returns unless asked: a rollout of four steps leaves
# about six, so this covers the last dozen or more rollouts of a model.
DEFAULT_HISTORY_LIMIT = 100
# The most one read returns: on an object store each entry is one GET, and a
# thousand of them is already seconds; older entries stay in the store.
MAX_HISTORY_LIMIT = 1000
# How long a read waits for the entries still queued to land first, so that an
# operator's action shows in the history read just after it. One PUT takes well
# under this; a store slower than that answers what it has, within the router's
# forward timeout.
READ_FLUSH_S = 2.0


def sanitise(text: str, limit: int = CALLER_MAX_CHARS) -> str:
    """``text`` with every unprintable character dropped, cut to ``limit`` characters.

    What a client says about itself ends up in JSON, a log line and a terminal
    table: no control character (a newline forging a log line, an escape sequence
    repainting a terminal) survives.
    """
    return "".join(char for char in text if char.isprintable())[:limit]


@dataclass(frozen=True)
class Caller:
    """Who asked for an operator action, as far as the Validator can know.

    ``client`` is the address the request came from (behind HAProxy, HAProxy's);
    ``actor`` what the ``X-Rayfleet-Actor`` header said. Either may be None.
    """

    client: str | None = None
    actor: str | None = None

    @classmethod
    def of(cls, client: str | None, actor: str | None) -> Caller:
        """A caller from untrusted text: each part sanitised, empty parts None."""
        return cls(client=_clean(client), actor=_clean(actor))

    def describe(self) -> str:
        """``actor (client)``, or whichever is known, or ``operator``."""
        if self.actor and self.client:
            return f"{self.actor} ({self.client})"
        return self.actor or self.client or "operator"


def _clean(text: str | None) -> str | None:
    """``text`` sanitised; None for nothing left."""
    return (sanitise(text) or None) if text is not None else None


@dataclass(frozen=True, kw_only=True)
class HistoryEntry:
    """One phase change of a rollout, as recorded.

    ``caller`` is None for the Validator's own decisions and set for an
    operator's action. ``gates`` are the results the decision rested on (empty
    for a start, an operator's action taken without an evaluation, or a step
    entered once the canary was ready).
    """

    ts: float
    app: str
    model: str
    kind: EventKind
    canary: str
    stable: str
    phase: Phase
    weight: float
    reason: str
    gates: tuple[GateResult, ...] = ()
    caller: Caller | None = None

    @classmethod
    def of(cls, app: str, event: Event, caller: Caller | None = None) -> HistoryEntry:
        """The entry recording ``event`` of application ``app``."""
        return cls(
            ts=event.ts,
            app=app,
            model=event.model,
            kind=event.kind,
            canary=event.version,
            stable=event.stable,
            phase=event.phase,
            weight=event.weight,
            reason=event.reason,
            gates=event.gates,
            caller=caller,
        )

    @property
    def failing(self) -> tuple[GateResult, ...]:
        """The gates that failed on this decision."""
        return tuple(gate for gate in self.gates if gate.verdict is Verdict.FAIL)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict: what the store keeps and the history route answers."""
        return {
            "format": _ENTRY_FORMAT,
            "ts": self.ts,
            "app": self.app,
            "model": self.model,
            "kind": self.kind,
            "canary": self.canary,
            "stable": self.stable,
            "phase": self.phase.value,
            "weight": self.weight,
            "reason": self.reason,
            # As webhooks carry them: a value that is not finite is null.
            "gates": [gate.to_dict() for gate in self.gates],
            "caller": (
                None
                if self.caller is None
                else {"client": self.caller.client, "actor": self.caller.actor}
            ),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> HistoryEntry:
        """The inverse of :meth:`to_dict`; raises ValueError on anything else."""
        stored = dict(data)
        if stored.pop("format", None) != _ENTRY_FORMAT:
            raise ValueError(
                f"history entry format {data.get('format')!r} is not {_ENTRY_FORMAT}"
            )
        try:
            return _ENTRY_ADAPTER.validate_python(stored)
        except ValidationError as error:
            raise ValueError(f"unreadable history entry: {error}") from None


_ENTRY_FORMAT = 1
# Validates what is read back: kinds, phases, verdicts, bounds, nested gates.
_ENTRY_ADAPTER = TypeAdapter(HistoryEntry)


class RolloutHistory:
    """Records each rollout event of one application, and reads them back.

    ``log`` receives one JSON line per event at INFO; the Validator passes Serve's
    replica logger so the line lands in its Serve log file. Entries reach
    ``store`` through ``writer`` (by default written at once).
    """

    def __init__(
        self,
        store: StateStore,
        app: str,
        log: logging.Logger,
        writer: StoreWriter | None = None,
    ) -> None:
        self.store = store
        self.app = app
        self.log = log
        self.events = EventLog(log)
        self.writer: StoreWriter = writer or SynchronousWriter(store, log)
        self.write_failures = 0
        # A background writer reports from its thread, a full queue from the
        # caller's: the count is kept under a lock.
        self._failures_lock = threading.Lock()

    def _key(self, model: str) -> str:
        # The same key as the model's rollout state: one app's history is its own.
        return f"{self.app}/{model}"

    def record(self, events: Iterable[Event], caller: Caller | None = None) -> None:
        """Log and append each of ``events``; ``caller`` set marks operator actions.

        Never raises or waits for the store: a failed append is logged and counted
        when the writer gets to it.
        """
        kind = DECISION_EVENT if caller is None else OPERATOR_EVENT
        for event in events:
            entry = HistoryEntry.of(self.app, event, caller)
            document = entry.to_dict()
            self.events.write(kind, document)

            def failed(error: Exception, model: str = event.model) -> None:
                self._failed(model, error)

            self.writer.append_history(self._key(event.model), document, failed)

    def _failed(self, model: str, error: Exception) -> None:
        """Count and log an entry of ``model`` that was not written."""
        with self._failures_lock:
            self.write_failures += 1
            failures = self.write_failures
        self.log.warning(
            "rollout history of %s not written (%d failures so far): %r",
            model,
            failures,
            error,
        )

    def read(
        self, model: str, limit: int = DEFAULT_HISTORY_LIMIT
    ) -> list[HistoryEntry]:
        """The last ``limit`` entries of ``model``, oldest first.

        Reads the store, so call it off the event loop; it first waits up to
        :data:`READ_FLUSH_S` for entries still queued. An entry that does not
        parse is skipped with a warning: one damaged file must not hide the rest
        of the record.
        """
        self.writer.flush(READ_FLUSH_S)
        entries = []
        for document in self.store.read_history(self._key(model), limit):
            try:
                entries.append(HistoryEntry.from_dict(document))
            except ValueError as error:
                logger.warning("skipping a history entry of %s: %s", model, error)
        return entries
