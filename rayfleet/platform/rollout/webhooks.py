"""Signed, retried, bounded delivery of rollout events to HTTP endpoints.

Each event is POSTed as JSON with three headers::

    X-Rayfleet-Event: rolled_back
    X-Rayfleet-Delivery: 3f2a...        the same on every retry, for deduplication
    X-Rayfleet-Signature: sha256=<hex>  HMAC-SHA256 of the body, when a secret is set

Receivers check the signature with :func:`verify`. The secret comes from the
environment variable that ``secret_env`` names, never from the config itself, and
is never logged.

An event sent while a trace span is current (:mod:`rayfleet.platform.tracing`)
also carries its W3C ``traceparent``, so the receiver's work joins that trace.
The Validator sends most events from its own evaluation loop, outside any
request: those carry none, and a delivery is not a span of its own (the
Validator exports no spans).

Nothing here waits on a receiver in the caller's path: :meth:`WebhookSender.send`
only enqueues, and a background task does the POSTs (with aiohttp, which
``ray[serve]`` already installs). A full queue drops events and counts them.

Every event an endpoint does not get (given up on after its retries, refused for a
full queue, or left queued at close) is one
:data:`~rayfleet.platform.events_log.WEBHOOK_DELIVERY_FAILED` line at WARNING:
the endpoint's host and port only (a webhook's path and query often hold its
token, e.g. Slack's), the event's kind and delivery id, the attempts made, and
the last HTTP status or the class of the error (an error's message can carry the
URL).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import os
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from rayfleet.platform.config.webhook import WebhookSpec, redact_url
from rayfleet.platform.errors import ConfigError
from rayfleet.platform.events_log import WEBHOOK_DELIVERY_FAILED, EventLog
from rayfleet.platform.tracing.propagation import trace_headers

__all__ = [
    "DELIVERY_HEADER",
    "EVENT_HEADER",
    "SIGNATURE_HEADER",
    "WebhookSender",
    "sign",
    "verify",
]

SIGNATURE_HEADER = "X-Rayfleet-Signature"
EVENT_HEADER = "X-Rayfleet-Event"
DELIVERY_HEADER = "X-Rayfleet-Delivery"

logger = logging.getLogger(__name__)
_events = EventLog(logger)


def sign(body: bytes, secret: bytes) -> str:
    """The signature header value for ``body``: ``sha256=<hex HMAC-SHA256>``."""
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


def verify(body: bytes, secret: bytes, header: str | None) -> bool:
    """Whether ``header`` is the signature of ``body``, compared in constant time."""
    if header is None:
        return False
    return hmac.compare_digest(sign(body, secret).encode(), header.encode())


def _read_secret(spec: WebhookSpec, environ: Mapping[str, str]) -> bytes | None:
    if spec.secret_env is None:
        return None
    secret = environ.get(spec.secret_env)
    if not secret:
        raise ConfigError(
            f"webhook {redact_url(spec.url)}: environment variable {spec.secret_env} "
            "is not set or empty"
        )
    return secret.encode()


def _host(url: str) -> str:
    """``host[:port]`` of ``url``: what a log line may say of an endpoint."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    return f"{host}:{parts.port}" if parts.port else host


@dataclass(frozen=True)
class _Delivery:
    kind: str
    body: bytes
    id: str
    # traceparent of the span current at send(): the worker runs outside it.
    trace: Mapping[str, str]


class WebhookSender:
    """Delivers events to one endpoint from a bounded queue, in order.

    Call :meth:`send` and :meth:`close` from the event loop's thread; the first
    :meth:`send` starts the background task. Use as ``async with`` or call
    :meth:`close` at shutdown.
    """

    def __init__(
        self, spec: WebhookSpec, *, environ: Mapping[str, str] | None = None
    ) -> None:
        self._spec = spec
        self._secret = _read_secret(spec, os.environ if environ is None else environ)
        self._where = _host(spec.url)
        self._queue: asyncio.Queue[_Delivery] = asyncio.Queue(maxsize=spec.max_queue)
        self._worker: asyncio.Task[None] | None = None
        self._closed = False
        self._counts = {"delivered": 0, "failed": 0, "dropped": 0, "retries": 0}

    def stats(self) -> dict[str, int]:
        """Counters since start: delivered, failed, dropped, retries; and queued."""
        return {**self._counts, "queued": self._queue.qsize()}

    def send(self, event: Mapping[str, Any]) -> bool:
        """Queue ``event`` (a JSON-ready dict with a ``kind``); never waits.

        False when the spec's filter leaves it out, or when it is dropped because
        the queue is full or the sender is closed.
        """
        kind = str(event.get("kind", ""))
        if self._spec.events is not None and kind not in self._spec.events:
            return False
        # Encode now: the caller may reuse its dict, and a bad event fails here.
        body = json.dumps(event, separators=(",", ":"), sort_keys=True).encode()
        delivery = _Delivery(kind, body, uuid.uuid4().hex, trace_headers())
        if self._closed:
            self._drop(delivery, "sender closed")
            return False
        if self._worker is None:
            # Outside a running loop this raises before anything is queued.
            self._worker = asyncio.get_running_loop().create_task(
                self._run(), name=f"webhooks {self._where}"
            )
        try:
            self._queue.put_nowait(delivery)
        except asyncio.QueueFull:
            self._drop(delivery, "queue full")
            return False
        return True

    async def close(self, timeout_s: float = 5.0) -> None:
        """Deliver what is queued for up to ``timeout_s``, then drop the rest."""
        self._closed = True
        if self._worker is None:
            return
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._queue.join(), timeout_s)
        self._worker.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._worker
        while not self._queue.empty():
            self._drop(self._queue.get_nowait(), "not delivered before close")

    async def __aenter__(self) -> WebhookSender:
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    def _drop(self, delivery: _Delivery, why: str) -> None:
        self._counts["dropped"] += 1
        self._failed(delivery, attempts=0, status=None, error=why)

    def _failed(
        self,
        delivery: _Delivery,
        *,
        attempts: int,
        status: int | None,
        error: str | None,
    ) -> None:
        """Log the one line of a delivery that did not happen."""
        _events.write(
            WEBHOOK_DELIVERY_FAILED,
            {
                "webhook": self._where,
                "kind": delivery.kind,
                "delivery": delivery.id,
                "attempts": attempts,
                "status": status,
                "error": error,
            },
            logging.WARNING,
        )

    async def _run(self) -> None:
        timeout = aiohttp.ClientTimeout(total=self._spec.timeout_s)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            while True:
                delivery = await self._queue.get()
                try:
                    await self._deliver(session, delivery)
                except asyncio.CancelledError:
                    self._drop(delivery, "cancelled at close")
                    raise
                except Exception:
                    # A bug here must not stop later deliveries.
                    self._counts["failed"] += 1
                    logger.exception("webhook %s: delivery failed", self._where)
                finally:
                    self._queue.task_done()

    async def _deliver(
        self, session: aiohttp.ClientSession, delivery: _Delivery
    ) -> None:
        headers = {
            **delivery.trace,
            "Content-Type": "application/json",
            EVENT_HEADER: delivery.kind,
            DELIVERY_HEADER: delivery.id,
        }
        if self._secret is not None:
            headers[SIGNATURE_HEADER] = sign(delivery.body, self._secret)
        attempts = 0
        status: int | None = None
        error: str | None = None
        while attempts <= self._spec.max_retries:
            if attempts:
                self._counts["retries"] += 1
                await asyncio.sleep(self._spec.backoff_s * 2 ** (attempts - 1))
            attempts += 1
            status, error = await self._post(session, delivery.body, headers)
            if status is not None and status < 300:
                self._counts["delivered"] += 1
                return
            if status is not None and status < 500:
                # A redirect or a refusal: the same request would meet the same.
                break
        self._counts["failed"] += 1
        self._failed(delivery, attempts=attempts, status=status, error=error)

    async def _post(
        self, session: aiohttp.ClientSession, body: bytes, headers: dict[str, str]
    ) -> tuple[int | None, str | None]:
        """``(status, None)`` as the endpoint answered, or ``(None, error)`` when
        the request did not get an answer."""
        try:
            async with session.post(
                self._spec.url, data=body, headers=headers, allow_redirects=False
            ) as response:
                return response.status, None
        except (aiohttp.ClientError, asyncio.TimeoutError) as error:
            # The class name only: messages can carry the URL and its credentials.
            return None, type(error).__name__
