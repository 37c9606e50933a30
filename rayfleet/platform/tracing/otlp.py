"""Finished spans as an OTLP ``ExportTraceServiceRequest``, and its delivery over
OTLP/HTTP.

The encoder writes protobuf's wire format directly for the few messages a span
needs. The OpenTelemetry SDK's encoder builds generated message objects field by
field, about 115 us a span here, which on a router that spends well under a
millisecond on a small model's request was most of what tracing cost; writing
the bytes takes about 10 us, since an attribute seen before (model, version,
path, status) is a cached byte string. Field numbers are those of
``opentelemetry/proto/trace/v1/trace.proto`` and ``common/v1/common.proto``; the
tests decode what this writes with the generated classes.
"""

from __future__ import annotations

import logging
import os
import struct
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "KIND_INTERNAL",
    "KIND_SERVER",
    "AttributeValue",
    "FinishedSpan",
    "OtlpHttpSender",
    "SpanEncoder",
    "SpanEvent",
    "headers_from_env",
]

logger = logging.getLogger(__name__)

AttributeValue = str | bool | int | float

# Span.SpanKind
KIND_INTERNAL = 1
KIND_SERVER = 2
# Status.StatusCode
_STATUS_ERROR = 2
# SpanFlags: the low byte is the W3C trace flags; these say whether the parent
# was remote, which the SDK's encoder also records.
_HAS_IS_REMOTE = 0x100
_IS_REMOTE = 0x200

_DOUBLE = struct.Struct("<d")
_FIXED64 = struct.Struct("<Q")
_FIXED32 = struct.Struct("<I")
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
# Cached attribute bytes: cleared when this many are held, and only values this
# short are kept, so the cache stays under a few megabytes whatever clients send.
_CACHE_LIMIT = 4096
_CACHED_VALUE_MAX = 128


@dataclass(frozen=True, slots=True)
class SpanEvent:
    """A timed event on a span (an exception, as OpenTelemetry names it)."""

    name: str
    time_ns: int
    attributes: Mapping[str, AttributeValue]


@dataclass(slots=True)
class FinishedSpan:
    """One ended span, as the tracer hands it to the encoder."""

    name: str
    kind: int
    trace_id: int
    span_id: int
    parent_id: int | None
    parent_is_remote: bool
    tracestate: str | None
    start_ns: int
    end_ns: int
    attributes: Mapping[str, AttributeValue]
    error: str | None = None
    events: tuple[SpanEvent, ...] = ()


# A length below 128 is one byte: nearly every field a span has.
_SHORT = [bytes((length,)) for length in range(0x80)]


def _text(value: str) -> bytes:
    # Protobuf strings must be UTF-8; an error message may hold a lone
    # surrogate, which strict encoding refuses.
    return value.encode("utf-8", "replace")


def _varint(value: int) -> bytes:
    if value < 0x80:
        return _SHORT[value]
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _field(tag: bytes, payload: bytes) -> bytes:
    """A length-delimited field: its tag, its length, its bytes."""
    length = len(payload)
    return tag + (_SHORT[length] if length < 0x80 else _varint(length)) + payload


def _any_value(value: AttributeValue) -> bytes:
    # bool before int: it is one.
    if isinstance(value, str):
        return _field(b"\x0a", _text(value))
    if isinstance(value, bool):
        return b"\x10\x01" if value else b"\x10\x00"
    if isinstance(value, int) and _INT64_MIN <= value <= _INT64_MAX:
        return b"\x18" + _varint(value & 0xFFFFFFFFFFFFFFFF)
    if isinstance(value, float):
        return b"\x21" + _DOUBLE.pack(value)
    return _field(b"\x0a", _text(str(value)))


class SpanEncoder:
    """Writes spans as OTLP protobuf. It remembers the bytes of each attribute
    key, and of the values of the keys in ``repeated``: those whose values recur
    from span to span (a model, a version, a status), up to
    :data:`_CACHED_VALUE_MAX` characters. Other values (a request id, an error
    message, a measurement) are written each time, so a client sending unique
    values cannot fill the cache. One per
    :class:`~rayfleet.platform.tracing.Tracing`."""

    def __init__(self, repeated: Collection[str] = ()) -> None:
        self.repeated = frozenset(repeated)
        self._keys: dict[str, bytes] = {}
        # The value's type is in the key: True == 1 for a dict.
        self._pairs: dict[tuple[bytes, str, type, AttributeValue], bytes] = {}

    def key_value(self, tag: bytes, key: str, value: AttributeValue) -> bytes:
        """One ``KeyValue`` field with ``tag``."""
        if key not in self.repeated or (
            isinstance(value, str) and len(value) > _CACHED_VALUE_MAX
        ):
            return self._encode_pair(tag, key, value)
        pair = (tag, key, type(value), value)
        cached = self._pairs.get(pair)
        if cached is None:
            if len(self._pairs) >= _CACHE_LIMIT:
                self._pairs.clear()
            cached = self._pairs[pair] = self._encode_pair(tag, key, value)
        return cached

    def _encode_pair(self, tag: bytes, key: str, value: AttributeValue) -> bytes:
        return _field(tag, self._key(key) + _field(b"\x12", _any_value(value)))

    def _key(self, key: str) -> bytes:
        encoded = self._keys.get(key)
        if encoded is None:
            if len(self._keys) >= _CACHE_LIMIT:
                self._keys.clear()
            encoded = self._keys[key] = _field(b"\x0a", _text(key))
        return encoded

    def attributes(self, tag: bytes, attributes: Mapping[str, AttributeValue]) -> bytes:
        """Every attribute as a ``KeyValue`` field with ``tag``."""
        key_value = self.key_value
        return b"".join(
            [key_value(tag, key, value) for key, value in attributes.items()]
        )

    def span(self, span: FinishedSpan) -> bytes:
        """One ``Span`` message, without its field tag."""
        parts = [
            b"\x0a\x10",
            span.trace_id.to_bytes(16, "big"),
            b"\x12\x08",
            span.span_id.to_bytes(8, "big"),
        ]
        if span.tracestate:
            parts.append(_field(b"\x1a", _text(span.tracestate)))
        flags = 0x01 | _HAS_IS_REMOTE  # only kept (sampled) spans are written
        if span.parent_id is not None:
            parts.append(b"\x22\x08")
            parts.append(span.parent_id.to_bytes(8, "big"))
            if span.parent_is_remote:
                flags |= _IS_REMOTE
        parts.append(_field(b"\x2a", _text(span.name)))
        parts.append(b"\x30" + _varint(span.kind))
        parts.append(b"\x39" + _FIXED64.pack(span.start_ns))
        parts.append(b"\x41" + _FIXED64.pack(span.end_ns))
        parts.append(self.attributes(b"\x4a", span.attributes))
        for event in span.events:
            body = (
                b"\x09"
                + _FIXED64.pack(event.time_ns)
                + _field(b"\x12", _text(event.name))
                + self.attributes(b"\x1a", event.attributes)
            )
            parts.append(_field(b"\x5a", body))
        if span.error is not None:
            status = _field(b"\x12", _text(span.error)) if span.error else b""
            parts.append(_field(b"\x7a", status + b"\x18" + _varint(_STATUS_ERROR)))
        parts.append(b"\x85\x01" + _FIXED32.pack(flags))
        return b"".join(parts)

    def request(
        self,
        spans: Sequence[bytes],
        resource: Mapping[str, AttributeValue],
        scope_name: str,
        scope_version: str,
    ) -> bytes:
        """``spans``, each written by :meth:`span`, as one serialized
        ``ExportTraceServiceRequest``: one resource (``resource``'s attributes)
        and one instrumentation scope."""
        scope = _field(b"\x0a", _text(scope_name)) + _field(
            b"\x12", _text(scope_version)
        )
        scope_spans = _field(b"\x0a", scope) + b"".join(
            [_field(b"\x12", span) for span in spans]
        )
        resource_spans = _field(b"\x0a", self.attributes(b"\x0a", resource)) + _field(
            b"\x12", scope_spans
        )
        return _field(b"\x0a", resource_spans)


def headers_from_env(environ: Mapping[str, str] = os.environ) -> dict[str, str]:
    """The collector's headers (an API key) as OpenTelemetry's environment names
    them: ``OTEL_EXPORTER_OTLP_TRACES_HEADERS``, else ``OTEL_EXPORTER_OTLP_HEADERS``,
    as comma-separated ``key=value`` pairs with percent-encoded values. A pair
    without ``=`` is skipped."""
    raw = environ.get("OTEL_EXPORTER_OTLP_TRACES_HEADERS") or environ.get(
        "OTEL_EXPORTER_OTLP_HEADERS", ""
    )
    headers: dict[str, str] = {}
    for pair in raw.split(","):
        key, separator, value = pair.partition("=")
        key = urllib.parse.unquote(key).strip().lower()
        value = urllib.parse.unquote(value).strip()
        if not separator or not key:
            continue
        if not (key + value).isprintable():
            # Never the value in the log: it is likely a secret.
            logger.warning(
                "tracing: collector header %r is not printable; skipped", key
            )
            continue
        headers[key] = value
    return headers


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """A collector that redirects is answered as a failure: urllib would turn
    the POST into a bodiless GET that carries the headers on and reads as a
    delivery."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


class OtlpHttpSender:
    """POSTs encoded requests to an OTLP/HTTP traces endpoint.

    A refused or failed POST is tried again after 0.5 s, 1 s and 2 s when the
    collector says to (429, 502-504) or cannot be reached, and then given up:
    spans are diagnostics, and a collector that is down must not hold memory.
    ``sleep`` is the wait between tries (tests pass a recorder).
    """

    RETRY_STATUSES = frozenset({429, 502, 503, 504})
    BACKOFF_S = (0.5, 1.0, 2.0)

    def __init__(
        self,
        endpoint: str,
        timeout_s: float = 10.0,
        headers: Mapping[str, str] | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.endpoint = endpoint
        self.timeout_s = timeout_s
        self.headers = {
            **(headers_from_env() if headers is None else headers),
            "Content-Type": "application/x-protobuf",
        }
        self._sleep = sleep
        self._opener = urllib.request.build_opener(_NoRedirects())
        # The last failure, for the tracer's warning: "HTTP 400", "URLError".
        self.last_failure: str | None = None

    def __call__(self, body: bytes) -> bool:
        """Deliver ``body``; whether the collector took it."""
        for wait_s in (*self.BACKOFF_S, None):
            retry = self._post(body)
            if retry is None:
                return True
            if not retry or wait_s is None:
                return False
            self._sleep(wait_s)
        return False

    def _post(self, body: bytes) -> bool | None:
        """``None`` when taken, else whether to try again."""
        request = urllib.request.Request(
            self.endpoint, data=body, headers=self.headers, method="POST"
        )
        try:
            with self._opener.open(request, timeout=self.timeout_s) as response:
                response.read()
            return None
        except urllib.error.HTTPError as error:
            self.last_failure = f"HTTP {error.code}"
            return error.code in self.RETRY_STATUSES
        except (OSError, ValueError) as error:
            self.last_failure = type(error).__name__
            return True
