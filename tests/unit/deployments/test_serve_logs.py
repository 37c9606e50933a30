"""rayfleet's records in a replica log file that Serve's own logging set up.

Serve's ``configure_component_logger`` is the function a replica calls before
its deployment's constructor; it only builds handlers, so it runs here without
Ray, with the throughput preset's settings (no stderr, a thousand records
buffered) and a temporary logs folder. Each test then reads the file Serve
writes.
"""

from __future__ import annotations

import asyncio
import builtins
import json
import logging
import socket
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from ray._common.logging_constants import LogKey
from ray.serve._private import constants as serve_constants
from ray.serve._private import logging_utils
from ray.serve._private.common import ServeComponentType
from ray.serve.schema import LoggingConfig

from rayfleet.deployments.serve_logs import (
    RAYFLEET_LOGGER,
    SERVE_LOGGER,
    send_to_serve,
    serve_writes_json,
)
from rayfleet.platform import events_log
from rayfleet.platform.config.webhook import WebhookSpec
from rayfleet.platform.events_log import EventLog
from rayfleet.platform.rollout.history import HistoryEntry, RolloutHistory
from rayfleet.platform.rollout.state_store import MemoryStateStore
from rayfleet.platform.rollout.webhooks import WebhookSender
from rayfleet.platform.serving.buffer import DropReport
from tests.unit.platform.rollout.test_history import ROLLBACK

SECRET = "hook-secret-9d2e"
# The fields of each kind of line, beside Serve's own.
FIELDS = {
    "rollout_decision": {
        "event",
        "format",
        "ts",
        "app",
        "model",
        "kind",
        "canary",
        "stable",
        "phase",
        "weight",
        "reason",
        "gates",
        "caller",
    },
    "webhook_delivery_failed": {
        "event",
        "webhook",
        "kind",
        "delivery",
        "attempts",
        "status",
        "error",
    },
    "observations_dropped": {"event", "router", "dropped", "interval_s", "total"},
}
FIELDS["rollout_operator_action"] = FIELDS["rollout_decision"]


def test_every_kind_of_event_is_described() -> None:
    assert set(FIELDS) == set(events_log.EVENT_KINDS)


@pytest.mark.parametrize("kind", sorted(FIELDS))
def test_no_field_is_one_a_record_or_serve_already_has(kind: str) -> None:
    # Python refuses an extra field named like a record attribute, and Ray's and
    # Serve's filters would overwrite one named like theirs.
    taken = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}
    taken |= {key.value for key in LogKey}
    taken |= {
        value
        for name, value in vars(serve_constants).items()
        if name.startswith("SERVE_LOG_") and isinstance(value, str)
    }
    assert FIELDS[kind] & taken == set()


@pytest.fixture
def replica_log(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[Path, Any]]:
    """``(log file, configure(encoding, level))``: a replica's logging set up as
    Serve sets it under the throughput preset; everything put back afterwards."""
    serve = logging.getLogger(SERVE_LOGGER)
    ours = logging.getLogger(RAYFLEET_LOGGER)
    saved = [
        (log, list(log.handlers), log.level, log.propagate) for log in (serve, ours)
    ]
    monkeypatch.setattr(logging_utils, "RAY_SERVE_LOG_TO_STDERR", False)
    # Serve sends a replica's print and standard streams to its logger.
    for name in ("stdout", "stderr"):
        monkeypatch.setattr(sys, name, getattr(sys, name))
    monkeypatch.setattr(builtins, "print", builtins.print)
    monkeypatch.setattr(events_log, "_structured", events_log._structured)

    def close() -> None:
        for handler in serve.handlers:
            target = getattr(handler, "target", None)
            handler.close()
            if target is not None:
                target.close()

    def configure(encoding: str, level: str = "INFO") -> None:
        close()
        logging_utils.configure_component_logger(
            component_type=ServeComponentType.REPLICA,
            component_name="rayfleet_Validator",
            component_id="abc123",
            logging_config=LoggingConfig(
                encoding=encoding, log_level=level, logs_dir=str(tmp_path)
            ),
            max_bytes=10_000_000,
            backup_count=1,
            buffer_size=1000,
        )

    try:
        yield tmp_path / "replica_rayfleet_Validator_abc123.log", configure
    finally:
        close()
        for log, handlers, level, propagate in saved:
            log.handlers[:] = handlers
            log.setLevel(level)
            log.propagate = propagate


def log_everything() -> None:
    """A plain INFO line of the core, then one event of each kind, each as the
    code that writes it in production does."""
    logging.getLogger("rayfleet.platform.rollout.controller").info(
        "resuming rollout of digits/v2"
    )
    serve = logging.getLogger(SERVE_LOGGER)
    # The Validator hands Serve's logger to the rollout history.
    RolloutHistory(MemoryStateStore(), "rayfleet", serve).record([ROLLBACK])
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    hook = WebhookSpec(
        url=f"http://opsuser:pa55word@127.0.0.1:{port}/hooks/T0K3N?key=qs3cret",
        secret_env="HOOK_SECRET",
        max_retries=0,
        timeout_s=1.0,
    )

    async def deliver() -> None:
        async with WebhookSender(hook, environ={"HOOK_SECRET": SECRET}) as sender:
            sender.send({"kind": "rolled_back", "model": "digits"})

    asyncio.run(deliver())
    # A router's report, on Serve's logger as the router gives it.
    DropReport(EventLog(serve), "router-1", 30.0).update(12)


def read_json_lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_before_the_fix_the_cores_info_lines_never_reach_the_file(
    replica_log: tuple[Path, Any],
) -> None:
    path, configure = replica_log
    configure("JSON")
    logging.getLogger("rayfleet.platform.rollout.controller").info("resuming")
    for handler in logging.getLogger(SERVE_LOGGER).handlers:
        handler.flush()
    assert "resuming" not in path.read_text()


def test_json_each_event_is_one_object_with_its_fields_at_the_top(
    replica_log: tuple[Path, Any],
) -> None:
    path, configure = replica_log
    configure("JSON")
    send_to_serve()
    assert serve_writes_json()
    log_everything()
    # Written at once, though Serve buffers a thousand records: each event flushes.
    plain, decision, webhook, drops = read_json_lines(path)
    assert plain["message"] == "resuming rollout of digits/v2"
    assert plain["levelname"] == "INFO"
    # Serve's own fields, on every line.
    serves = set(plain) - {"message"}
    assert {"asctime", "levelname", "deployment", "replica"} <= serves
    for line in (decision, webhook, drops):
        assert serves <= set(line)
        assert line["message"] == line["event"]
        assert set(line) - serves - {"message"} == FIELDS[line["event"]]
    assert (decision["levelname"], decision["event"]) == ("INFO", "rollout_decision")
    assert {k: decision[k] for k in FIELDS["rollout_decision"] - {"event"}} == (
        HistoryEntry.of("rayfleet", ROLLBACK).to_dict()
    )
    assert (webhook["levelname"], webhook["webhook"]) == ("WARNING", webhook["webhook"])
    assert webhook["webhook"].startswith("127.0.0.1:")
    assert (webhook["kind"], webhook["attempts"], webhook["status"]) == (
        "rolled_back",
        1,
        None,
    )
    assert webhook["error"] == "ClientConnectorError"
    assert (drops["levelname"], drops["router"], drops["dropped"]) == (
        "WARNING",
        "router-1",
        12,
    )
    text = path.read_text()
    for secret in (SECRET, "opsuser", "pa55word", "T0K3N", "qs3cret"):
        assert secret not in text


def test_text_each_event_is_the_message_as_one_json_object(
    replica_log: tuple[Path, Any],
) -> None:
    path, configure = replica_log
    configure("TEXT")
    send_to_serve()
    assert not serve_writes_json()
    log_everything()
    plain, *events = path.read_text().splitlines()
    assert plain.startswith("INFO ")
    assert plain.endswith("-- resuming rollout of digits/v2")
    parsed = [json.loads(line.split(" -- ", 1)[1]) for line in events]
    assert [(line["event"], set(line)) for line in parsed] == [
        (kind, FIELDS[kind])
        for kind in (
            "rollout_decision",
            "webhook_delivery_failed",
            "observations_dropped",
        )
    ]
    assert [line.split(" ", 1)[0] for line in events] == ["INFO", "WARNING", "WARNING"]


def test_the_level_and_encoding_follow_serves_logging_config(
    replica_log: tuple[Path, Any],
) -> None:
    path, configure = replica_log
    configure("JSON", "WARNING")
    send_to_serve()
    history = RolloutHistory(
        MemoryStateStore(), "rayfleet", logging.getLogger("rayfleet.validator")
    )
    history.record([ROLLBACK])
    assert path.read_text() == ""
    # A new logging_config, applied by Serve in place: no new call needed.
    configure("TEXT", "INFO")
    history.record([ROLLBACK])
    (line,) = path.read_text().splitlines()
    assert json.loads(line.split(" -- ", 1)[1])["kind"] == "rolled_back"


def test_a_second_call_does_not_write_twice(replica_log: tuple[Path, Any]) -> None:
    path, configure = replica_log
    configure("JSON")
    send_to_serve()
    send_to_serve()
    logging.getLogger("rayfleet.platform.rollout.controller").warning("once")
    for handler in logging.getLogger(SERVE_LOGGER).handlers:
        handler.flush()
    assert [line["message"] for line in read_json_lines(path)] == ["once"]
