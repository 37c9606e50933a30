"""W3C trace context in and out of carriers: HTTP headers, gRPC metadata, and the
small dict a router sends a replica with each request.

Only ``traceparent`` and ``tracestate`` travel: they are what Triton, collectors
and webhook receivers understand, and baggage could carry a client's data further
than it meant to go. The span current in a context is a :class:`SpanContext` in a
context variable of this module, so it follows a request across ``await`` as
asyncio's contexts do.
"""

from __future__ import annotations

import contextvars
from collections.abc import Mapping
from typing import NamedTuple, Protocol

__all__ = [
    "TRACEPARENT",
    "TRACESTATE",
    "CurrentSpan",
    "SpanContext",
    "context_from",
    "current_span",
    "enter_span",
    "leave_span",
    "trace_headers",
]

TRACEPARENT = "traceparent"
TRACESTATE = "tracestate"

# W3C asks vendors to pass on at least 512 characters of tracestate; longer ones
# are dropped whole rather than cut inside a member.
_MAX_TRACESTATE = 512
_HEX = frozenset("0123456789abcdef")


class SpanContext(NamedTuple):
    """The identity of one span, as W3C trace context carries it (a tuple: it
    is made twice per traced request, and a tuple is the cheapest to make)."""

    trace_id: int
    span_id: int
    sampled: bool
    tracestate: str | None = None

    def traceparent(self) -> str:
        """The ``traceparent`` header value naming this span."""
        flags = "01" if self.sampled else "00"
        return f"00-{self.trace_id:032x}-{self.span_id:016x}-{flags}"


class CurrentSpan(Protocol):
    """What a span open in a context shows of itself."""

    @property
    def context(self) -> SpanContext: ...


# One variable for the whole trace state of a context: setting a context
# variable is among the dearest steps of a span.
_CURRENT: contextvars.ContextVar[CurrentSpan | None] = contextvars.ContextVar(
    "rayfleet_current_span", default=None
)


def current_span() -> CurrentSpan | None:
    """The span current in this context, ``None`` outside any."""
    return _CURRENT.get()


def enter_span(span: CurrentSpan) -> contextvars.Token[CurrentSpan | None]:
    """Make ``span`` current in this context, until :func:`leave_span`."""
    return _CURRENT.set(span)


def leave_span(token: contextvars.Token[CurrentSpan | None]) -> None:
    """Make current again the span that was before :func:`enter_span`."""
    _CURRENT.reset(token)


def trace_headers() -> dict[str, str]:
    """``traceparent`` (and ``tracestate``, when set) naming the span current in
    this context; empty when there is none, so a call made outside any trace
    carries nothing."""
    current = _CURRENT.get()
    if current is None:
        return {}
    context = current.context
    headers = {TRACEPARENT: context.traceparent()}
    if context.tracestate is not None:
        headers[TRACESTATE] = context.tracestate
    return headers


def context_from(carrier: Mapping[str, str]) -> SpanContext | None:
    """The span a valid ``traceparent`` in ``carrier`` names (lower-case keys, as
    HTTP/2, Starlette and gRPC metadata give them), with the carrier's
    ``tracestate``; ``None`` when it names none or names it badly, which starts a
    new trace."""
    value = carrier.get(TRACEPARENT)
    if value is None:
        return None
    parsed = _parse_traceparent(value.strip())
    if parsed is None:
        return None
    trace_id, span_id, sampled = parsed
    return SpanContext(trace_id, span_id, sampled, _tracestate(carrier))


def _parse_traceparent(value: str) -> tuple[int, int, bool] | None:
    # version-trace_id-span_id-flags; a later version may append fields after
    # a dash, version 00 may not, and version ff is invalid.
    if len(value) < 55 or (len(value) > 55 and value[55] != "-"):
        return None
    version, trace_hex, span_hex, flags = (
        value[:2],
        value[3:35],
        value[36:52],
        value[53:55],
    )
    if value[2] != "-" or value[35] != "-" or value[52] != "-":
        return None
    if version == "ff" or (version == "00" and len(value) != 55):
        return None
    if not _HEX.issuperset(version + trace_hex + span_hex + flags):
        return None
    trace_id, span_id = int(trace_hex, 16), int(span_hex, 16)
    if trace_id == 0 or span_id == 0:
        return None
    return trace_id, span_id, bool(int(flags, 16) & 1)


def _tracestate(carrier: Mapping[str, str]) -> str | None:
    value = carrier.get(TRACESTATE)
    if not value or len(value) > _MAX_TRACESTATE:
        return None
    # Printable ASCII only: it is sent on as a header value.
    if not value.isascii() or not value.isprintable():
        return None
    return value
