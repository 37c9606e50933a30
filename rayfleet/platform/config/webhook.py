"""The ``webhooks`` part of the spec: endpoints that receive rollout events.

Only what a config says lives here; the delivery (signing, retries, the queue) is
:mod:`rayfleet.platform.rollout.webhooks`.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from pydantic import (
    Field,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    field_validator,
)

from rayfleet.platform.config.base import Spec
from rayfleet.platform.config.rollout import EVENT_KINDS

__all__ = ["WebhookSpec", "redact_url"]


class WebhookSpec(Spec):
    """One endpoint that receives rollout events."""

    url: str = Field(description="http(s) URL the events are POSTed to")
    secret_env: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
        description="name of the environment variable holding the HMAC secret; "
        "None sends unsigned events",
    )
    timeout_s: PositiveFloat = 5.0
    max_retries: NonNegativeInt = 3
    backoff_s: NonNegativeFloat = Field(
        default=0.5, description="wait before the first retry; doubles each retry"
    )
    events: tuple[str, ...] | None = Field(
        default=None, description="event kinds to send; None sends all"
    )
    max_queue: PositiveInt = 1000

    @field_validator("url")
    @classmethod
    def _http_url(cls, url: str) -> str:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(
                f"url must be http(s) with a host, e.g. 'https://hooks.example.com/x'"
                f"; got {redact_url(url)!r}"
            )
        return url

    @field_validator("events")
    @classmethod
    def _known_events(cls, events: tuple[str, ...] | None) -> tuple[str, ...] | None:
        unknown = sorted(set(events or ()) - set(EVENT_KINDS))
        if unknown:
            raise ValueError(f"unknown event kinds {unknown}; known: {EVENT_KINDS}")
        return events


def redact_url(url: str) -> str:
    """The URL without credentials, query or fragment, which may hold tokens."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"
