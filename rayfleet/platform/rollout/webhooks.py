"""Signed, retried, bounded delivery of rollout events to HTTP endpoints.

Each event is POSTed as JSON with three headers::

    X-Rayfleet-Event: rolled_back
    X-Rayfleet-Delivery: 3f2a...        the same on every retry, for deduplication
    X-Rayfleet-Signature: sha256=<hex>  HMAC-SHA256 of the body, when a secret is set

Receivers check the signature with :func:`verify`. The secret comes from the
environment variable that ``secret_env`` names, never from the config itself, and
is never logged.

Nothing here waits on a receiver in the caller's path: :meth:`WebhookSender.send`
only enqueues, and a background task does the POSTs (with aiohttp, which
``ray[serve]`` already installs). A full queue drops events and counts them.
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

import aiohttp

from rayfleet.platform.config.webhook import WebhookSpec, redact_url
from rayfleet.platform.errors import ConfigError

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


@dataclass(frozen=True)
class _Delivery:
    kind: str
    body: bytes
    id: str


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
        self._where = redact_url(spec.url)
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
        if self._closed:
            self._drop(kind, "sender closed")
            return False
        # Encode now: the caller may reuse its dict, and a bad event fails here.
        body = json.dumps(event, separators=(",", ":"), sort_keys=True).encode()
        if self._worker is None:
            # Outside a running loop this raises before anything is queued.
            self._worker = asyncio.get_running_loop().create_task(
                self._run(), name=f"webhooks {self._where}"
            )
        try:
            self._queue.put_nowait(_Delivery(kind, body, uuid.uuid4().hex))
        except asyncio.QueueFull:
            self._drop(kind, "queue full")
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
            self._drop(self._queue.get_nowait().kind, "not delivered before close")

    async def __aenter__(self) -> WebhookSender:
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    def _drop(self, kind: str, why: str) -> None:
        self._counts["dropped"] += 1
        logger.warning("webhook %s: dropped a %s event: %s", self._where, kind, why)

    async def _run(self) -> None:
        timeout = aiohttp.ClientTimeout(total=self._spec.timeout_s)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            while True:
                delivery = await self._queue.get()
                try:
                    await self._deliver(session, delivery)
                except asyncio.CancelledError:
                    self._drop(delivery.kind, "cancelled at close")
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
            "Content-Type": "application/json",
            EVENT_HEADER: delivery.kind,
            DELIVERY_HEADER: delivery.id,
        }
        if self._secret is not None:
            headers[SIGNATURE_HEADER] = sign(delivery.body, self._secret)
        attempts = self._spec.max_retries + 1
        for attempt in range(attempts):
            if attempt:
                self._counts["retries"] += 1
                await asyncio.sleep(self._spec.backoff_s * 2 ** (attempt - 1))
            problem, retryable = await self._post(session, delivery.body, headers)
            if problem is None:
                self._counts["delivered"] += 1
                return
            if not retryable:
                break
        self._counts["failed"] += 1
        logger.warning(
            "webhook %s: gave up on %s event %s after %d attempt(s): %s",
            self._where,
            delivery.kind,
            delivery.id,
            attempt + 1,
            problem,
        )

    async def _post(
        self, session: aiohttp.ClientSession, body: bytes, headers: dict[str, str]
    ) -> tuple[str | None, bool]:
        """``(problem, retryable)``; no problem means delivered."""
        try:
            async with session.post(
                self._spec.url, data=body, headers=headers, allow_redirects=False
            ) as response:
                if response.status < 300:
                    return None, False
                return f"HTTP {response.status}", response.status >= 500
        except (aiohttp.ClientError, asyncio.TimeoutError) as error:
            # The class name only: messages can carry the URL and its credentials.
            return type(error).__name__, True
