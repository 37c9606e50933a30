"""Store writes off the caller's thread: in order, coalesced, bounded, reported,
and flushed or closed within a bounded wait."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator, Mapping
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rayfleet.platform.errors import StoreError
from rayfleet.platform.rollout import Phase
from rayfleet.platform.rollout.controller import ValidatorCore
from rayfleet.platform.rollout.history import RolloutHistory
from rayfleet.platform.rollout.state_store import MemoryStateStore
from rayfleet.platform.rollout.store_writer import BackgroundWriter, SynchronousWriter
from tests.unit.platform.rollout.test_controller import READY, platform, serve
from tests.unit.platform.rollout.test_history import PAUSE, ROLLBACK, FailingStore

T0 = 1_700_000_000.0
LOG = logging.getLogger("t.writer")
# Long enough for any thread here to get going; only a failing test waits it out.
PATIENCE_S = 10.0

Op = tuple[str, str, dict[str, Any]]


class RecordingStore(MemoryStateStore):
    """Records every write in the order it was made; ``gate`` holds each write
    until it is set, and ``started`` tells when a write has begun."""

    def __init__(self) -> None:
        super().__init__()
        self.ops: list[Op] = []
        self.gate = threading.Event()
        self.gate.set()
        self.started = threading.Event()

    def _hold(self) -> None:
        self.started.set()
        assert self.gate.wait(PATIENCE_S), "the test never opened the gate"

    def write_state(self, key: str, state: Mapping[str, Any]) -> None:
        self._hold()
        self.ops.append(("state", key, dict(state)))
        super().write_state(key, state)

    def append_history(self, key: str, entry: Mapping[str, Any]) -> None:
        self._hold()
        self.ops.append(("history", key, dict(entry)))
        super().append_history(key, entry)


class RefusingStore(RecordingStore):
    """Raises on a write whose document has ``"bad": True``."""

    def write_state(self, key: str, state: Mapping[str, Any]) -> None:
        if state.get("bad"):
            raise StoreError(f"PUT {key} refused")
        super().write_state(key, state)

    def append_history(self, key: str, entry: Mapping[str, Any]) -> None:
        if entry.get("bad"):
            raise StoreError(f"PUT {key} refused")
        super().append_history(key, entry)


@pytest.fixture
def store() -> RecordingStore:
    return RecordingStore()


@pytest.fixture
def writer(store: RecordingStore) -> Iterator[BackgroundWriter]:
    # Room for every append the order tests make at once: on a busy machine the
    # thread falls behind the submitting loop, and the default bound would drop.
    writer = BackgroundWriter(store, max_pending=5000, log=LOG)
    yield writer
    store.gate.set()
    assert writer.close(PATIENCE_S)


def hold_first_write(store: RecordingStore, writer: BackgroundWriter) -> None:
    """Close the gate and start a state save of ``held``, which waits there."""
    store.gate.clear()
    store.started.clear()
    writer.write_state("held", {"n": 0})
    assert store.started.wait(PATIENCE_S)


# -- order ----------------------------------------------------------------------


def test_many_writes_land_in_the_order_they_were_submitted(
    store: RecordingStore, writer: BackgroundWriter
) -> None:
    submitted: list[Op] = []
    for n in range(3000):
        key = f"app/m{n % 3}"
        if n % 4 == 0:
            writer.write_state(key, {"n": n})
            submitted.append(("state", key, {"n": n}))
        else:
            writer.append_history(key, {"n": n})
            submitted.append(("history", key, {"n": n}))
    assert writer.flush(PATIENCE_S)
    # Entries land in submission order across keys; a key's saves may be merged
    # (a newer one taking a queued one's place) but never land older after newer.
    entries = [d["n"] for kind, _, d in store.ops if kind == "history"]
    assert entries == [d["n"] for kind, _, d in submitted if kind == "history"]
    for m in range(3):
        saves = [
            d["n"] for kind, k, d in store.ops if (kind, k) == ("state", f"app/m{m}")
        ]
        assert saves == sorted(saves)
    # Every history entry landed, in order, under its key.
    for m in range(3):
        key = f"app/m{m}"
        expected = [d for kind, k, d in submitted if kind == "history" and k == key]
        assert store.read_history(key, 10_000) == expected
        last_state = [d for kind, k, d in submitted if kind == "state" and k == key]
        assert store.read_state(key) == last_state[-1]
    assert writer.pending == 0
    assert (writer.failures, writer.dropped) == (0, 0)


@settings(max_examples=30, deadline=None)
@given(
    ops=st.lists(
        st.tuples(st.booleans(), st.sampled_from(["a", "b"])), min_size=1, max_size=40
    )
)
def test_any_sequence_of_writes_ends_as_submitted(
    ops: list[tuple[bool, str]],
) -> None:
    store = RecordingStore()
    writer = BackgroundWriter(store, log=LOG)
    for n, (is_state, key) in enumerate(ops):
        if is_state:
            writer.write_state(key, {"n": n})
        else:
            writer.append_history(key, {"n": n})
    assert writer.close(PATIENCE_S)
    for key in ("a", "b"):
        states = [n for n, (is_state, k) in enumerate(ops) if is_state and k == key]
        entries = [
            n for n, (is_state, k) in enumerate(ops) if not is_state and k == key
        ]
        assert store.read_state(key) == ({"n": states[-1]} if states else None)
        assert store.read_history(key, 100) == [{"n": n} for n in entries]
        saved = [d["n"] for kind, k, d in store.ops if kind == "state" and k == key]
        assert saved == sorted(saved)


def test_what_was_submitted_is_a_copy(
    store: RecordingStore, writer: BackgroundWriter
) -> None:
    finished: dict[str, Any] = {"v2": "promoted"}
    hold_first_write(store, writer)
    writer.write_state("app/m", {"finished": finished})
    # The controller goes on changing its own dicts while the save waits.
    finished["v3"] = "rolled_back"
    store.gate.set()
    assert writer.flush(PATIENCE_S)
    assert store.read_state("app/m") == {"finished": {"v2": "promoted"}}


# -- coalescing -------------------------------------------------------------------


def test_a_queued_save_is_replaced_by_the_next_of_its_key(
    store: RecordingStore, writer: BackgroundWriter
) -> None:
    hold_first_write(store, writer)
    writer.write_state("held", {"n": 1})  # queued: the one in progress is n=0
    writer.append_history("held", {"n": 2})
    writer.write_state("held", {"n": 3})  # takes n=1's place
    writer.write_state("other", {"n": 4})
    writer.write_state("held", {"n": 5})  # and so does this
    assert writer.pending == 4  # the held save, two saves, one entry
    store.gate.set()
    assert writer.flush(PATIENCE_S)
    assert store.ops == [
        ("state", "held", {"n": 0}),
        ("state", "held", {"n": 5}),
        ("history", "held", {"n": 2}),
        ("state", "other", {"n": 4}),
    ]


def test_saves_are_never_refused_while_history_is_full(
    store: RecordingStore,
) -> None:
    writer = BackgroundWriter(store, max_pending=1, log=LOG)
    hold_first_write(store, writer)
    writer.append_history("app/m", {"n": 1})
    for n in range(100):
        writer.write_state(f"app/m{n % 5}", {"n": n})
    store.gate.set()
    assert writer.close(PATIENCE_S)
    assert writer.dropped == 0
    assert [store.read_state(f"app/m{m}") for m in range(5)] == [
        {"n": 95 + m} for m in range(5)
    ]


# -- failures and overload ------------------------------------------------------------


def test_a_failed_write_is_logged_and_later_writes_still_land(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = RefusingStore()
    writer = BackgroundWriter(store, log=LOG)
    with caplog.at_level(logging.WARNING, logger=LOG.name):
        writer.write_state("app/m", {"bad": True, "token": "s3cret"})
        assert writer.flush(PATIENCE_S)  # else the next save would replace it
        writer.write_state("app/m", {"n": 1})
        writer.append_history("app/m", {"bad": True})
        writer.append_history("app/m", {"n": 2})
        assert writer.close(PATIENCE_S)
    assert store.read_state("app/m") == {"n": 1}
    assert store.read_history("app/m", 10) == [{"n": 2}]
    assert writer.failures == 2
    assert [r.getMessage() for r in caplog.records if r.name == LOG.name] == [
        "store write not done: state of app/m (1 failed, 0 dropped so far): "
        "StoreError: PUT app/m refused",
        "store write not done: history of app/m (2 failed, 0 dropped so far): "
        "StoreError: PUT app/m refused",
    ]
    # The document itself is never logged.
    assert "s3cret" not in caplog.text


def test_a_failure_goes_to_the_writes_own_callback() -> None:
    store = RefusingStore()
    writer = BackgroundWriter(store, log=LOG)
    errors: list[Exception] = []
    writer.append_history("app/m", {"bad": True}, errors.append)
    assert writer.flush(PATIENCE_S)
    assert [str(e) for e in errors] == ["PUT app/m refused"]
    writer.close(PATIENCE_S)


def test_a_callback_that_raises_does_not_stop_the_writer(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = RefusingStore()
    writer = BackgroundWriter(store, log=LOG)

    def broken(error: Exception) -> None:
        raise RuntimeError("callback broke")

    with caplog.at_level(logging.ERROR, logger=LOG.name):
        writer.append_history("app/m", {"bad": True}, broken)
        writer.append_history("app/m", {"n": 1})
        assert writer.close(PATIENCE_S)
    assert store.read_history("app/m", 10) == [{"n": 1}]
    assert "reporting a failed history write failed" in caplog.text


def test_history_over_the_bound_is_dropped_counted_and_reported(
    store: RecordingStore, caplog: pytest.LogCaptureFixture
) -> None:
    writer = BackgroundWriter(store, max_pending=2, log=LOG)
    hold_first_write(store, writer)
    errors: list[Exception] = []
    with caplog.at_level(logging.WARNING, logger=LOG.name):
        for n in range(4):
            writer.append_history("app/m", {"n": n}, errors.append)
        writer.append_history("app/m", {"n": 4})
    assert writer.dropped == 3
    assert [str(e) for e in errors] == [
        "dropped: 2 history entries already wait",
        "dropped: 2 history entries already wait",
    ]
    assert [r.getMessage() for r in caplog.records if r.name == LOG.name] == [
        "store write not done: history of app/m (0 failed, 3 dropped so far): "
        "StoreError: dropped: 2 history entries already wait",
    ]
    store.gate.set()
    assert writer.close(PATIENCE_S)
    assert store.read_history("app/m", 10) == [{"n": 0}, {"n": 1}]


# -- flush and close -----------------------------------------------------------------


def test_flush_waits_for_the_writes_submitted_before_it(
    store: RecordingStore, writer: BackgroundWriter
) -> None:
    hold_first_write(store, writer)
    writer.append_history("app/m", {"n": 1})
    began = time.monotonic()
    assert not writer.flush(0.05)
    assert time.monotonic() - began < 1.0  # bounded: it gave up
    assert writer.pending == 2
    threading.Timer(0.05, store.gate.set).start()
    assert writer.flush(PATIENCE_S)
    assert writer.pending == 0
    assert store.read_history("app/m", 10) == [{"n": 1}]


def test_close_lands_the_queue_then_refuses_writes(
    store: RecordingStore, caplog: pytest.LogCaptureFixture
) -> None:
    writer = BackgroundWriter(store, log=LOG)
    for n in range(50):
        writer.append_history("app/m", {"n": n})
    assert writer.close(PATIENCE_S)
    assert len(store.read_history("app/m", 100)) == 50
    with caplog.at_level(logging.WARNING, logger=LOG.name):
        writer.write_state("app/m", {"n": 50})
    assert writer.dropped == 1
    assert "state of app/m (0 failed, 1 dropped so far)" in caplog.text
    assert "the writer is closed" in caplog.text
    assert store.read_state("app/m") is None
    assert writer.close(PATIENCE_S)  # again: harmless


def test_close_gives_up_on_a_stuck_store_within_its_timeout(
    store: RecordingStore, caplog: pytest.LogCaptureFixture
) -> None:
    writer = BackgroundWriter(store, log=LOG)
    hold_first_write(store, writer)
    began = time.monotonic()
    with caplog.at_level(logging.WARNING, logger=LOG.name):
        assert not writer.close(0.05)
    assert time.monotonic() - began < 1.0
    assert "store writer closed with 1 writes still pending" in caplog.text
    store.gate.set()
    assert writer.close(PATIENCE_S)
    assert store.read_state("held") == {"n": 0}


def test_the_synchronous_writer_writes_at_once_and_reports_failures(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = RefusingStore()
    writer = SynchronousWriter(store, LOG)
    errors: list[Exception] = []
    writer.write_state("app/m", {"n": 1})
    writer.append_history("app/m", {"n": 2})
    assert store.ops == [("state", "app/m", {"n": 1}), ("history", "app/m", {"n": 2})]
    with caplog.at_level(logging.WARNING, logger=LOG.name):
        writer.append_history("app/m", {"bad": True}, errors.append)
        writer.write_state("app/m", {"bad": True})
    assert [str(e) for e in errors] == ["PUT app/m refused"]
    assert writer.failures == 2
    assert [r.getMessage() for r in caplog.records if r.name == LOG.name] == [
        "store write not done: state of app/m (2 failed, 0 dropped so far): "
        "StoreError: PUT app/m refused",
    ]
    assert writer.flush(0) and writer.close(0)


# -- the core and its history, through a background writer -----------------------------


def drive(core: ValidatorCore) -> None:
    """Start v2, serve its first step, and pause it."""
    core.tick(T0, READY)
    serve(core, T0, 12)
    core.tick(T0 + 12, READY)
    core.act("digits", "pause", T0 + 13)


def test_the_core_through_a_background_writer_saves_what_a_synchronous_one_does(
    store: RecordingStore,
) -> None:
    direct = MemoryStateStore()
    drive(ValidatorCore(platform(), "shop", direct, {}, now=T0))
    writer = BackgroundWriter(store, log=LOG)
    drive(ValidatorCore(platform(), "shop", store, {}, now=T0, writer=writer))
    assert writer.close(PATIENCE_S)
    assert store.read_state("shop/digits") == direct.read_state("shop/digits")
    history = store.read_history("shop/digits", 100)
    assert [e["kind"] for e in history] == [
        "rollout_started",
        "step_advanced",
        "step_advanced",
        "paused",
    ]
    assert history == direct.read_history("shop/digits", 100)


def test_the_core_never_waits_for_a_stalled_store(store: RecordingStore) -> None:
    store.gate.clear()  # the store takes nothing until the end
    writer = BackgroundWriter(store, log=LOG)
    began = time.monotonic()
    core = ValidatorCore(platform(), "shop", store, {}, now=T0, writer=writer)
    drive(core)
    assert time.monotonic() - began < PATIENCE_S / 2
    # The core's memory is current while the store has nothing yet.
    assert core.rollouts["digits"].phase is Phase.PAUSED
    assert core.plans()["digits"].weights["v2"] > 0
    assert store.read_state("shop/digits") is None
    store.gate.set()
    assert writer.close(PATIENCE_S)
    saved = store.read_state("shop/digits")
    assert saved is not None and saved["rollout"]["phase"] == "paused"


def test_history_failures_from_the_writer_thread_are_counted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = FailingStore()
    writer = BackgroundWriter(store, log=LOG)
    history = RolloutHistory(store, "shop", LOG, writer)
    with caplog.at_level(logging.WARNING, logger=LOG.name):
        history.record([PAUSE, ROLLBACK])
        assert writer.flush(PATIENCE_S)
    assert history.write_failures == 2
    assert writer.failures == 2
    warnings = [r.getMessage() for r in caplog.records if r.name == LOG.name]
    assert warnings == [
        "rollout history of digits not written (1 failures so far): "
        "StoreError('the bucket is gone')",
        "rollout history of digits not written (2 failures so far): "
        "StoreError('the bucket is gone')",
    ]
    writer.close(PATIENCE_S)


def test_a_history_read_waits_for_entries_still_queued(store: RecordingStore) -> None:
    writer = BackgroundWriter(store, log=LOG)
    history = RolloutHistory(store, "shop", LOG, writer)
    hold_first_write(store, writer)
    history.record([PAUSE, ROLLBACK])
    threading.Timer(0.05, store.gate.set).start()
    assert [e.kind for e in history.read("digits")] == ["paused", "rolled_back"]
    assert writer.close(PATIENCE_S)
