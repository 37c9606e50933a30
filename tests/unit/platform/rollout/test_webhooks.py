from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import socket
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web
from pydantic import ValidationError

from rayfleet.platform.config.rollout import RolloutSpec
from rayfleet.platform.config.webhook import WebhookSpec
from rayfleet.platform.errors import ConfigError
from rayfleet.platform.rollout import start
from rayfleet.platform.rollout.webhooks import (
    DELIVERY_HEADER,
    EVENT_HEADER,
    SIGNATURE_HEADER,
    WebhookSender,
    sign,
    verify,
)
from rayfleet.platform.tracing import Tracing
from tests.unit.platform.tracing.memory import memory_tracing

SECRET = "s3cr3t-never-in-logs-7f9c"
ENV = {"HOOK_SECRET": SECRET}
EVENT = {"kind": "rolled_back", "model": "digits", "version": "v3", "weight": 0.0}


@dataclass
class Receiver:
    """A real HTTP endpoint that checks signatures and misbehaves on request."""

    secret: bytes | None = SECRET.encode()
    fail_first: int = 0
    hang_first: int = 0
    status: int = 204
    calls: int = 0
    bad_signatures: int = 0
    received: list[tuple[dict[str, str], Any]] = field(default_factory=list)
    release: asyncio.Event = field(default_factory=asyncio.Event)

    async def handle(self, request: web.Request) -> web.Response:
        self.calls += 1
        body = await request.read()
        signature = request.headers.get(SIGNATURE_HEADER)
        if self.secret is not None and not verify(body, self.secret, signature):
            self.bad_signatures += 1
            return web.Response(status=401)
        if self.calls <= self.hang_first:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.release.wait(), 5)
            return web.Response(status=503)  # the sender gave up long ago
        if self.calls <= self.fail_first:
            return web.Response(status=500)
        if self.status < 300:
            self.received.append((dict(request.headers), json.loads(body)))
        return web.Response(status=self.status)


@contextlib.asynccontextmanager
async def serving(receiver: Receiver) -> AsyncIterator[str]:
    app = web.Application()
    app.router.add_post("/hook", receiver.handle)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}/hook?token=abc"
    finally:
        receiver.release.set()
        await runner.cleanup()


def failure_lines(caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    """The webhook_delivery_failed lines logged, parsed."""
    return [
        json.loads(record.getMessage())
        for record in caplog.records
        if record.name == "rayfleet.platform.rollout.webhooks"
        and record.levelno == logging.WARNING
        and "webhook_delivery_failed" in record.getMessage()
    ]


def spec(url: str, **fields: Any) -> WebhookSpec:
    base: dict[str, Any] = {
        "url": url,
        "secret_env": "HOOK_SECRET",
        "timeout_s": 1.0,
        "max_retries": 3,
        "backoff_s": 0.01,
    }
    return WebhookSpec.model_validate({**base, **fields})


# --- signatures and spec ----------------------------------------------------------


def test_sign_is_hmac_sha256_hex() -> None:
    expected = hmac.new(b"k", b'{"a":1}', hashlib.sha256).hexdigest()
    assert sign(b'{"a":1}', b"k") == f"sha256={expected}"


@pytest.mark.parametrize(
    ("body", "secret", "header", "ok"),
    [
        (b"body", b"k", sign(b"body", b"k"), True),
        (b"bodY", b"k", sign(b"body", b"k"), False),
        (b"body", b"K", sign(b"body", b"k"), False),
        (b"body", b"k", sign(b"body", b"k").removeprefix("sha256="), False),
        (b"body", b"k", "sha256=", False),
        (b"body", b"k", "sha256=\u00e9", False),
        (b"body", b"k", None, False),
    ],
)
def test_verify(body: bytes, secret: bytes, header: str | None, ok: bool) -> None:
    assert verify(body, secret, header) is ok


def test_spec_defaults() -> None:
    hook = WebhookSpec(url="https://hooks.example.com/x")
    assert (hook.timeout_s, hook.max_retries, hook.backoff_s) == (5, 3, 0.5)
    assert (hook.secret_env, hook.events) == (None, None)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"url": "ftp://example.com/x"}, "http"),
        ({"url": "https:///nohost"}, "host"),
        ({"url": "https://x.example", "secret_env": "not a name"}, "pattern"),
        ({"url": "https://x.example", "events": ["rolledback"]}, "rolledback"),
        ({"url": "https://x.example", "secret": "inline"}, "Extra"),
        ({"url": "https://x.example", "max_retries": -1}, "greater"),
    ],
)
def test_spec_rejects(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        WebhookSpec.model_validate(fields)


def test_invalid_url_error_hides_credentials() -> None:
    with pytest.raises(ValidationError) as error:
        WebhookSpec(url="ftp://user:hunter2@example.com/x?token=t0k3n")
    assert "hunter2" not in str(error.value).split("input_value")[0]
    assert "t0k3n" not in str(error.value).split("input_value")[0]


def test_missing_secret_variable_is_a_config_error() -> None:
    hook = spec("https://x.example/hook")
    with pytest.raises(ConfigError, match="HOOK_SECRET is not set"):
        WebhookSender(hook, environ={})


# --- delivery -------------------------------------------------------------------


def test_delivers_a_signed_rollout_event() -> None:
    receiver = Receiver()
    _, events = start("digits", "v2", "v1", RolloutSpec(), 12.5)

    async def scenario() -> dict[str, int]:
        async with serving(receiver) as url:
            sender = WebhookSender(spec(url), environ=ENV)
            assert sender.send(events[0].to_dict()) is True
            await sender.close()
            return sender.stats()

    stats = asyncio.run(scenario())
    assert stats == {
        "delivered": 1,
        "failed": 0,
        "dropped": 0,
        "retries": 0,
        "queued": 0,
    }
    ((headers, body),) = receiver.received
    assert body == events[0].to_dict()
    assert headers[EVENT_HEADER] == "rollout_started"
    assert len(headers[DELIVERY_HEADER]) == 32
    assert headers["Content-Type"] == "application/json"
    assert receiver.bad_signatures == 0


def test_unsigned_without_a_secret() -> None:
    receiver = Receiver(secret=None)

    async def scenario() -> None:
        async with (
            serving(receiver) as url,
            WebhookSender(spec(url, secret_env=None)) as sender,
        ):
            sender.send(EVENT)

    asyncio.run(scenario())
    ((headers, _),) = receiver.received
    assert SIGNATURE_HEADER not in headers


def test_retries_5xx_with_backoff_and_one_delivery_id() -> None:
    receiver = Receiver(fail_first=2)
    ids: list[str] = []

    async def record(request: web.Request) -> web.Response:
        ids.append(request.headers[DELIVERY_HEADER])
        return await receiver.handle(request)

    async def scenario() -> dict[str, int]:
        app = web.Application()
        app.router.add_post("/hook", record)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        url = f"http://127.0.0.1:{runner.addresses[0][1]}/hook"
        try:
            async with WebhookSender(spec(url, backoff_s=0.05), environ=ENV) as sender:
                began = time.monotonic()
                sender.send(EVENT)
                await sender.close()
                # Two retries: 0.05 then 0.1 seconds of backoff.
                assert time.monotonic() - began >= 0.15
                return sender.stats()
        finally:
            await runner.cleanup()

    stats = asyncio.run(scenario())
    assert (stats["delivered"], stats["retries"], stats["failed"]) == (1, 2, 0)
    assert receiver.calls == 3
    assert len(set(ids)) == 1


def test_gives_up_after_max_retries_and_never_logs_the_secret(
    caplog: pytest.LogCaptureFixture,
) -> None:
    receiver = Receiver(fail_first=100)

    async def scenario() -> dict[str, int]:
        async with serving(receiver) as url:
            async with WebhookSender(spec(url, max_retries=2), environ=ENV) as sender:
                sender.send(EVENT)
            return sender.stats()

    with caplog.at_level(logging.DEBUG):
        stats = asyncio.run(scenario())
    assert (stats["failed"], stats["retries"], stats["delivered"]) == (1, 2, 0)
    assert receiver.calls == 3
    (line,) = failure_lines(caplog)
    assert line == {
        "event": "webhook_delivery_failed",
        "webhook": line["webhook"],
        "kind": "rolled_back",
        "delivery": line["delivery"],
        "attempts": 3,
        "status": 500,
        "error": None,
    }
    # Host and port only: the path and query of a webhook URL can hold its token.
    assert line["webhook"].startswith("127.0.0.1:")
    assert "/hook" not in line["webhook"]
    everything = caplog.text + repr([vars(record) for record in caplog.records])
    assert SECRET not in everything
    assert sign(json.dumps(EVENT).encode(), SECRET.encode())[7:] not in everything
    assert "token=abc" not in everything


def test_no_retry_on_4xx(caplog: pytest.LogCaptureFixture) -> None:
    receiver = Receiver(status=400)

    async def scenario() -> dict[str, int]:
        async with serving(receiver) as url:
            async with WebhookSender(spec(url), environ=ENV) as sender:
                sender.send(EVENT)
            return sender.stats()

    with caplog.at_level(logging.WARNING):
        stats = asyncio.run(scenario())
    assert (stats["failed"], stats["retries"]) == (1, 0)
    assert receiver.calls == 1
    [line] = failure_lines(caplog)
    assert (line["attempts"], line["status"], line["error"]) == (1, 400, None)


def test_a_hanging_receiver_times_out_and_is_retried() -> None:
    receiver = Receiver(hang_first=1)

    async def scenario() -> dict[str, int]:
        async with serving(receiver) as url:
            async with WebhookSender(spec(url, timeout_s=0.2), environ=ENV) as sender:
                began = time.monotonic()
                sender.send(EVENT)
                # Enqueue only: a wait for the hanging receiver takes 0.2 s.
                assert time.monotonic() - began < 0.15
                await sender.close()
                assert time.monotonic() - began < 2
            return sender.stats()

    stats = asyncio.run(scenario())
    assert (stats["delivered"], stats["retries"]) == (1, 1)
    assert len(receiver.received) == 1


def test_connection_refused_is_retried_then_failed(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    # Credentials in the URL, as a user might write them: never in the log.
    url = f"http://hookuser:hookpass@127.0.0.1:{port}/hook/T0K3N?sig=q5ecret"

    async def scenario() -> dict[str, int]:
        async with WebhookSender(spec(url, max_retries=2), environ=ENV) as sender:
            sender.send(EVENT)
        return sender.stats()

    with caplog.at_level(logging.DEBUG):
        stats = asyncio.run(scenario())
    assert (stats["failed"], stats["retries"], stats["delivered"]) == (1, 2, 0)
    [line] = failure_lines(caplog)
    assert line["webhook"] == f"127.0.0.1:{port}"
    assert (line["attempts"], line["status"]) == (3, None)
    assert line["error"] == "ClientConnectorError"
    everything = caplog.text + repr([vars(record) for record in caplog.records])
    for secret in ("hookuser", "hookpass", "T0K3N", "q5ecret", SECRET):
        assert secret not in everything


def test_full_queue_drops_and_counts(caplog: pytest.LogCaptureFixture) -> None:
    receiver = Receiver(hang_first=100)

    async def scenario() -> tuple[list[bool], dict[str, int]]:
        async with serving(receiver) as url:
            hook = spec(url, max_queue=2, timeout_s=0.2, max_retries=0)
            sender = WebhookSender(hook, environ=ENV)
            # No await between sends: the worker has not taken any yet.
            accepted = [sender.send({**EVENT, "n": n}) for n in range(5)]
            full = sender.stats()
            await sender.close(timeout_s=2)
            return accepted, full

    with caplog.at_level(logging.WARNING):
        accepted, full = asyncio.run(scenario())
    assert accepted == [True, True, False, False, False]
    assert (full["dropped"], full["queued"]) == (3, 2)
    refused = [line for line in failure_lines(caplog) if line["error"] == "queue full"]
    assert [(line["kind"], line["attempts"]) for line in refused] == [
        ("rolled_back", 0)
    ] * 3
    # Each names its own delivery.
    assert len({line["delivery"] for line in refused}) == 3


def test_close_has_a_deadline_and_drops_the_rest() -> None:
    receiver = Receiver(hang_first=100)

    async def scenario() -> dict[str, int]:
        async with serving(receiver) as url:
            sender = WebhookSender(spec(url, timeout_s=3), environ=ENV)
            for n in range(3):
                sender.send({**EVENT, "n": n})
            began = time.monotonic()
            await sender.close(timeout_s=0.2)
            assert time.monotonic() - began < 1
            assert sender.send(EVENT) is False
            return sender.stats()

    stats = asyncio.run(scenario())
    # One in flight when the deadline struck, two queued, one sent after close.
    assert (stats["dropped"], stats["delivered"], stats["queued"]) == (4, 0, 0)


def test_filter_sends_only_the_chosen_kinds() -> None:
    receiver = Receiver()

    async def scenario() -> tuple[bool, bool, dict[str, int]]:
        async with serving(receiver) as url:
            hook = spec(url, events=["rolled_back", "promoted"])
            async with WebhookSender(hook, environ=ENV) as sender:
                skipped = sender.send({**EVENT, "kind": "step_advanced"})
                sent = sender.send(EVENT)
            return skipped, sent, sender.stats()

    skipped, sent, stats = asyncio.run(scenario())
    assert (skipped, sent) == (False, True)
    assert (stats["delivered"], stats["dropped"]) == (1, 0)
    assert [body["kind"] for _, body in receiver.received] == ["rolled_back"]


def test_an_event_sent_in_a_trace_carries_its_traceparent() -> None:
    receiver = Receiver()

    async def scenario(tracing: Tracing) -> str:
        async with (
            serving(receiver) as url,
            WebhookSender(spec(url), environ=ENV) as sender,
        ):
            sender.send({**EVENT, "n": 0})
            with tracing.request_span({}, {}) as span:
                sender.send({**EVENT, "n": 1})
            context = span.context
        return f"00-{context.trace_id:032x}-{context.span_id:016x}-"

    with memory_tracing() as memory:
        expected = asyncio.run(scenario(memory.tracing))
    (untraced, _), (traced, _) = receiver.received
    assert "traceparent" not in {name.lower() for name in untraced}
    assert traced["traceparent"].startswith(expected)
