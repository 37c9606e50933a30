"""The rollout history: entries, the recorder's log line and store writes, and a
ValidatorCore whose record outlives it."""

from __future__ import annotations

import json
import logging
import logging.handlers
import math
from collections.abc import Mapping
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rayfleet.platform.config.rollout import EVENT_KINDS
from rayfleet.platform.errors import ModelNotFound, StoreError
from rayfleet.platform.rollout import Event, GateResult, Phase, Verdict
from rayfleet.platform.rollout.controller import ValidatorCore
from rayfleet.platform.rollout.history import (
    CALLER_MAX_CHARS,
    DECISION_EVENT,
    OPERATOR_EVENT,
    Caller,
    HistoryEntry,
    RolloutHistory,
    sanitise,
)
from rayfleet.platform.rollout.state_store import MemoryStateStore
from rayfleet.platform.rollout.telemetry import render_metrics
from tests.unit.platform.rollout.test_controller import READY, platform, serve

T0 = 1_700_000_000.0
FAILED_P99 = GateResult(
    "model_p99_ratio", 2.182, 2.0, "max", Verdict.FAIL, "canary 21.8 ms, stable 10 ms"
)
PASSED_JS = GateResult("prediction_js", 0.01, 0.1, "max", Verdict.PASS)
ROLLBACK = Event(
    kind="rolled_back",
    model="digits",
    version="v2",
    stable="v1",
    ts=T0 + 11,
    weight=0.0,
    phase=Phase.ROLLED_BACK,
    reason="gates failed on 549 canary requests: model_p99_ratio 2.182 > max 2",
    gates=(FAILED_P99, PASSED_JS),
)
PAUSE = Event(
    kind="paused",
    model="digits",
    version="v2",
    stable="v1",
    ts=T0 + 5,
    weight=5.0,
    phase=Phase.PAUSED,
    reason="operator: pause",
)


class FailingStore(MemoryStateStore):
    """Keeps state but refuses every history write, as a store that is down."""

    def append_history(self, key: str, entry: Mapping[str, Any]) -> None:
        raise StoreError("the bucket is gone")


def recorder(store: MemoryStateStore | None = None) -> RolloutHistory:
    return RolloutHistory(store or MemoryStateStore(), "shop", logging.getLogger("t"))


# -- sanitise and Caller ------------------------------------------------------


@given(st.text())
def test_sanitise_keeps_only_printable_text_within_the_cap(text: str) -> None:
    clean = sanitise(text)
    assert clean.isprintable()
    assert len(clean) <= CALLER_MAX_CHARS
    assert clean == "".join(c for c in text if c.isprintable())[:CALLER_MAX_CHARS]


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("alice@laptop", "alice@laptop"),
        ('alice\n{"event": "forged"}', 'alice{"event": "forged"}'),
        ("\x1b[2Jbob", "[2Jbob"),
        ("tab\there\x7f", "tabhere"),
        ("josé@hôte", "josé@hôte"),
        ("x" * 1000, "x" * CALLER_MAX_CHARS),
    ],
)
def test_sanitise_drops_control_characters(raw: str, clean: str) -> None:
    assert sanitise(raw) == clean


@pytest.mark.parametrize(
    ("client", "actor", "caller", "described"),
    [
        ("10.0.0.7", "alice@laptop", Caller("10.0.0.7", "alice@laptop"),
         "alice@laptop (10.0.0.7)"),
        ("10.0.0.7", None, Caller("10.0.0.7", None), "10.0.0.7"),
        (None, "\n\t", Caller(None, None), "operator"),
        ("", "bob", Caller(None, "bob"), "bob"),
    ],
)  # fmt: skip
def test_a_caller_is_sanitised_and_described(
    client: str | None, actor: str | None, caller: Caller, described: str
) -> None:
    assert Caller.of(client, actor) == caller
    assert caller.describe() == described


# -- entries --------------------------------------------------------------------


def test_an_entry_records_the_event_and_round_trips_through_json() -> None:
    entry = HistoryEntry.of("shop", ROLLBACK)
    document = entry.to_dict()
    assert document == {
        "format": 1,
        "ts": T0 + 11,
        "app": "shop",
        "model": "digits",
        "kind": "rolled_back",
        "canary": "v2",
        "stable": "v1",
        "phase": "rolled_back",
        "weight": 0.0,
        "reason": ROLLBACK.reason,
        "gates": [FAILED_P99.to_dict(), PASSED_JS.to_dict()],
        "caller": None,
    }
    assert document["gates"][0] == {
        "name": "model_p99_ratio",
        "value": 2.182,
        "threshold": 2.0,
        "bound": "max",
        "verdict": "fail",
        "passed": False,
        "detail": "canary 21.8 ms, stable 10 ms",
    }
    assert HistoryEntry.from_dict(json.loads(json.dumps(document))) == entry
    assert entry.failing == (FAILED_P99,)


def test_an_operator_entry_keeps_its_caller() -> None:
    caller = Caller("10.0.0.7", "alice@laptop")
    entry = HistoryEntry.of("shop", PAUSE, caller)
    assert entry.to_dict()["caller"] == {"client": "10.0.0.7", "actor": "alice@laptop"}
    assert HistoryEntry.from_dict(entry.to_dict()) == entry


def test_a_value_that_is_not_finite_is_stored_as_null() -> None:
    infinite = GateResult("model_p99_ratio", math.inf, 2.0, "max", Verdict.FAIL)
    event = Event(**{**vars(ROLLBACK), "gates": (infinite,)})
    document = HistoryEntry.of("shop", event).to_dict()
    assert document["gates"][0]["value"] is None
    json.dumps(document, allow_nan=False)
    assert HistoryEntry.from_dict(document).gates[0].value is None


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"format": 2}, "history entry format 2 is not 1"),
        ({"format": None}, "history entry format None is not 1"),
        ({"kind": "exploded"}, "unreadable history entry"),
        ({"phase": "sideways"}, "unreadable history entry"),
        ({"weight": "heavy"}, "unreadable history entry"),
        ({"gates": [{"name": "x"}]}, "unreadable history entry"),
    ],
)
def test_an_unreadable_entry_is_a_value_error(
    change: dict[str, Any], message: str
) -> None:
    document = {**HistoryEntry.of("shop", ROLLBACK).to_dict(), **change}
    with pytest.raises(ValueError, match=message):
        HistoryEntry.from_dict(document)


@pytest.mark.parametrize("kind", EVENT_KINDS)
def test_every_event_kind_is_an_entry_kind(kind: str) -> None:
    event = Event(**{**vars(PAUSE), "kind": kind})
    assert HistoryEntry.from_dict(HistoryEntry.of("a", event).to_dict()).kind == kind


# -- the recorder ---------------------------------------------------------------


def test_record_appends_in_order_and_reads_the_last_entries() -> None:
    store = MemoryStateStore()
    history = recorder(store)
    history.record([PAUSE])
    history.record([ROLLBACK])
    assert [e.kind for e in history.read("digits")] == ["paused", "rolled_back"]
    assert [e.kind for e in history.read("digits", limit=1)] == ["rolled_back"]
    assert history.read("iris") == []
    # The key is the app's, beside its rollout state.
    assert len(store.read_history("shop/digits", 10)) == 2


def test_record_logs_one_json_line_per_event(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caller = Caller("10.0.0.7", "alice@laptop")
    with caplog.at_level(logging.INFO, logger="t"):
        recorder().record([ROLLBACK])
        recorder().record([PAUSE], caller)
    lines = [r for r in caplog.records if r.name == "t"]
    assert [r.levelno for r in lines] == [logging.INFO, logging.INFO]
    decision, action = (json.loads(r.getMessage()) for r in lines)
    assert decision == {
        "event": DECISION_EVENT,
        **HistoryEntry.of("shop", ROLLBACK).to_dict(),
    }
    assert decision["gates"][0]["value"] == 2.182
    assert action["event"] == OPERATOR_EVENT
    assert action["caller"] == {"client": "10.0.0.7", "actor": "alice@laptop"}
    assert "\n" not in lines[0].getMessage()


def test_record_flushes_a_buffering_handler() -> None:
    """Serve's throughput preset holds a thousand records before writing them."""
    log = logging.getLogger("t.buffered")
    log.setLevel(logging.INFO)
    target = logging.handlers.BufferingHandler(capacity=10_000)
    buffered = logging.handlers.MemoryHandler(
        capacity=1000, flushLevel=logging.ERROR, target=target
    )
    log.addHandler(buffered)
    try:
        RolloutHistory(MemoryStateStore(), "shop", log).record([ROLLBACK])
    finally:
        log.removeHandler(buffered)
    assert [json.loads(r.getMessage())["kind"] for r in target.buffer] == [
        "rolled_back"
    ]


def test_a_failed_write_is_logged_and_counted_never_raised(
    caplog: pytest.LogCaptureFixture,
) -> None:
    history = recorder(FailingStore())
    with caplog.at_level(logging.INFO, logger="t"):
        history.record([PAUSE, ROLLBACK])
    assert history.write_failures == 2
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert [r.getMessage() for r in warnings] == [
        "rollout history of digits not written (1 failures so far): "
        "StoreError('the bucket is gone')",
        "rollout history of digits not written (2 failures so far): "
        "StoreError('the bucket is gone')",
    ]
    # The decisions still reached the log.
    assert sum(DECISION_EVENT in r.getMessage() for r in caplog.records) == 2


def test_an_unreadable_stored_entry_is_skipped(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = MemoryStateStore()
    history = recorder(store)
    history.record([PAUSE])
    store.append_history("shop/digits", {"format": 1, "kind": "nonsense"})
    history.record([ROLLBACK])
    with caplog.at_level(logging.WARNING):
        assert [e.kind for e in history.read("digits")] == ["paused", "rolled_back"]
    assert "skipping a history entry of digits" in caplog.text


# -- a ValidatorCore's record -----------------------------------------------------


def roll_back_v2(core: ValidatorCore) -> float:
    """Drive v2 into its first step and let failing traffic roll it back."""
    core.tick(T0, READY)
    now = T0
    for _ in range(30):  # however many evaluations the gates want in a row
        serve(core, now, 2, failing="v2")
        now += 2
        core.tick(now, READY)
        if core.finished["digits"].get("v2") == "rolled_back":
            return now
    raise AssertionError(f"v2 was not rolled back: {core.rollouts['digits']}")


def test_the_record_outlives_the_next_rollout_and_a_restart() -> None:
    store = MemoryStateStore()
    core = ValidatorCore(platform(), "shop", store, {}, now=T0)
    rolled_back_at = roll_back_v2(core)
    core.act("digits", "pause", rolled_back_at + 1, caller=Caller("10.0.0.7", "ann"))

    # A new Validator on the same store: the record is read from the store.
    restarted = ValidatorCore(platform(), "shop", store, {}, now=rolled_back_at + 2)
    entries = restarted.read_history("digits")
    assert [(e.kind, e.canary, e.stable) for e in entries] == [
        ("rollout_started", "v2", "v1"),
        ("step_advanced", "v2", "v1"),
        ("rolled_back", "v2", "v1"),
        ("rollout_started", "v3", "v1"),
        ("paused", "v3", "v1"),
    ]
    rollback = entries[2]
    assert rollback.ts == rolled_back_at and rollback.caller is None
    assert rollback.weight == 0.0 and rollback.phase is Phase.ROLLED_BACK
    assert rollback.reason.startswith("gates failed on ")
    (failed,) = rollback.failing
    assert failed.name == "error_rate_delta"
    assert failed.value is not None and failed.value > failed.threshold
    assert entries[4].caller == Caller("10.0.0.7", "ann")
    assert entries[4].reason == "operator: pause"
    assert [e.kind for e in restarted.read_history("digits", limit=2)] == [
        "rollout_started",
        "paused",
    ]
    assert restarted.read_history("iris") == []


def test_an_operator_action_without_a_caller_is_still_an_operators() -> None:
    core = ValidatorCore(platform(), "shop", MemoryStateStore(), {}, now=T0)
    core.tick(T0, READY)
    core.act("digits", "promote", T0 + 1)
    entries = core.read_history("digits")
    assert [(e.kind, e.caller) for e in entries] == [
        ("rollout_started", None),
        ("step_advanced", None),
        ("promoted", Caller()),
        # The next canary is the Validator's own doing, not the operator's.
        ("rollout_started", None),
    ]


def test_the_core_logs_to_the_log_it_is_given(
    caplog: pytest.LogCaptureFixture,
) -> None:
    log = logging.getLogger("t.validator")
    with caplog.at_level(logging.INFO, logger="t.validator"):
        core = ValidatorCore(
            platform(), "shop", MemoryStateStore(), {}, now=T0, decision_log=log
        )
        core.tick(T0, READY)
    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == log.name]
    assert [(line["event"], line["kind"]) for line in lines] == [
        (DECISION_EVENT, "rollout_started"),
        (DECISION_EVENT, "step_advanced"),
    ]


def test_a_store_that_refuses_history_never_stops_a_rollout() -> None:
    store = FailingStore()
    core = ValidatorCore(platform(), "shop", store, {}, now=T0)
    now = roll_back_v2(core)
    # rollout_started, step_advanced and rolled_back of v2, rollout_started of v3
    assert core.history.write_failures == 4
    saved = store.read_state("shop/digits")
    assert saved is not None and saved["finished"] == {"v2": "rolled_back"}
    metrics = render_metrics(core, now).decode()
    assert "\nrayfleet_history_write_failures_total 4.0\n" in metrics
    assert "\nrayfleet_state_write_failures_total 0.0\n" in metrics


class StateRefusingStore(MemoryStateStore):
    """Records history but refuses every state save."""

    def write_state(self, key: str, state: Mapping[str, Any]) -> None:
        raise StoreError("the bucket is read-only")


def test_refused_state_saves_are_counted_in_metrics() -> None:
    store = StateRefusingStore()
    core = ValidatorCore(platform(), "shop", store, {}, now=T0)
    now = roll_back_v2(core)
    refused = core.writer.state_failures
    assert refused > 0 and store.read_state("shop/digits") is None
    metrics = render_metrics(core, now).decode()
    assert f"\nrayfleet_state_write_failures_total {refused:.1f}\n" in metrics


def test_history_of_an_unknown_model_is_model_not_found() -> None:
    core = ValidatorCore(platform(), "shop", MemoryStateStore(), {}, now=T0)
    with pytest.raises(ModelNotFound, match="no model 'fraud'"):
        core.read_history("fraud")
