"""One process's spans: a tracer built from the spec, and the two spans of an
inference request.

- ``rayfleet.infer`` (SERVER) is the router's span of a request, from the route
  to the answer: its parent is the caller's ``traceparent`` when one came, and
  the service adds which version answered and how it was chosen.
- ``rayfleet.replica`` (INTERNAL) is the span of the version's run, a child of
  the router's: in a model replica, whose parent arrives with the request over
  the Ray hop, or in the router itself for a version placed there, so a trace
  looks the same wherever a version runs.

The spans are OpenTelemetry's in everything a collector sees (W3C trace context,
parent-based ratio sampling, OTLP/HTTP protobuf), but not the SDK's objects. On a
router that spends about 400 us of CPU on a small model's request in-process, the
SDK's two spans and their encoding cost about as much again, so 100% sampling ran
at 0.75x of tracing off. Here a span is a few fields set on the request path; as
it ends it is written as OTLP bytes (:mod:`.otlp`, about 10 us) and queued, and a
thread of its own sends the queue in batches. Writing the bytes at once rather
than on that thread costs the same CPU (the GIL is one), holds a few hundred
bytes per span instead of objects the garbage collector must walk, and leaves
the thread only the network. With tracing off, nothing here is built: callers
hold ``None`` instead of a :class:`Tracing` and check that once per request.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from contextvars import Token
from types import TracebackType
from typing import Literal

from opentelemetry.sdk.resources import SERVICE_NAME, Resource

from rayfleet.platform.config.tracing import TracingSpec
from rayfleet.platform.constants import PACKAGE_VERSION
from rayfleet.platform.errors import RayfleetError, http_status
from rayfleet.platform.tracing.otlp import (
    KIND_INTERNAL,
    KIND_SERVER,
    AttributeValue,
    FinishedSpan,
    OtlpHttpSender,
    SpanEncoder,
    SpanEvent,
)
from rayfleet.platform.tracing.propagation import (
    CurrentSpan,
    SpanContext,
    context_from,
    current_span,
    enter_span,
    leave_span,
)

__all__ = [
    "REPLICA_SPAN",
    "REQUEST_SPAN",
    "ActiveSpan",
    "Choice",
    "Sink",
    "Tracing",
    "choice_of",
    "tracing_for",
]

logger = logging.getLogger(__name__)

REQUEST_SPAN = "rayfleet.infer"
REPLICA_SPAN = "rayfleet.replica"

# How the service chose the version: a pin (URL or x-model-version), the sticky
# key's hash, or the traffic plan's weighted draw.
Choice = Literal["pin", "sticky", "weight"]

# Where encoded ExportTraceServiceRequest bodies go; True when delivered.
Sink = Callable[[bytes], bool]

# The SDK's batch processor's defaults: spans per request to the collector, and
# spans held before new ones are dropped.
EXPORT_BATCH = 512
MAX_HELD = 2048
# Attributes whose values recur from request to request; the encoder caches
# their bytes (rayfleet.request_id and the measurements it writes each time).
REPEATED_ATTRIBUTES = frozenset(
    {
        "http.request.method",
        "url.path",
        "rpc.system",
        "rpc.method",
        "rayfleet.model",
        "rayfleet.version",
        "rayfleet.choice",
        "rayfleet.placement",
        "rayfleet.rows",
        "rayfleet.status",
        "rayfleet.batch_size",
    }
)
# At most one warning a minute about spans that did not reach the collector.
_WARN_EVERY_S = 60.0
_ID_BITS_LOW = 2**64 - 1


def _new_id(bits: int) -> int:
    # Not a secret, and as the SDK's id generator does: W3C only asks for
    # randomness, and zero is the one invalid value.
    while True:
        value = random.getrandbits(bits)
        if value:
            return value


class ActiveSpan:
    """A started span, current while its ``with`` block runs (``context`` names
    it); its attributes are kept here and recorded once, as it ends.
    ``request`` is the request span it is part of in this process (itself for
    one; ``None`` in a model replica), which the service names the chosen
    version on.

    An exception leaving the block is recorded on the span as an ``exception``
    event; a request span also gets the HTTP status it is answered with
    (:func:`~rayfleet.platform.errors.http_status`, 500 for a bug). A span that
    sampling leaves out keeps ``attributes`` at ``None``, collects nothing and
    records nothing, but still names itself to the calls made inside it, so
    they learn it was not sampled.
    """

    __slots__ = (
        "_error",
        "_is_request",
        "_kind",
        "_name",
        "_parent",
        "_parent_is_remote",
        "_start_ns",
        "_token",
        "_tracing",
        "attributes",
        "context",
        "request",
    )

    def __init__(
        self,
        tracing: Tracing,
        name: str,
        kind: int,
        parent: SpanContext | None,
        attributes: dict[str, AttributeValue],
        *,
        parent_is_remote: bool,
        is_request: bool,
        request: ActiveSpan | None = None,
    ) -> None:
        if parent is None:
            trace_id = _new_id(128)
            context = SpanContext(trace_id, _new_id(64), tracing.samples(trace_id))
        else:
            context = SpanContext(
                parent.trace_id, _new_id(64), parent.sampled, parent.tracestate
            )
        self.context = context
        self.attributes: dict[str, AttributeValue] | None = (
            attributes if context.sampled else None
        )
        self._tracing = tracing
        self._name = name
        self._kind = kind
        self._parent = parent
        self._parent_is_remote = parent_is_remote
        self._is_request = is_request
        self.request = self if is_request else request
        self._error: str | None = None
        self._start_ns = 0
        self._token: Token[CurrentSpan | None] | None = None

    def __enter__(self) -> ActiveSpan:
        self._start_ns = time.time_ns()
        self._token = enter_span(self)
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._token is not None:
            leave_span(self._token)
        if self.attributes is None:
            return
        end_ns = time.time_ns()
        events: tuple[SpanEvent, ...] = ()
        if isinstance(error, Exception):
            events = (_exception_event(error, end_ns),)
            if self._is_request:
                self.set_status(
                    http_status(error) if isinstance(error, RayfleetError) else 500
                )
            else:
                self._error = type(error).__name__
        parent = self._parent
        self._tracing.record(
            FinishedSpan(
                name=self._name,
                kind=self._kind,
                trace_id=self.context.trace_id,
                span_id=self.context.span_id,
                parent_id=None if parent is None else parent.span_id,
                parent_is_remote=self._parent_is_remote,
                tracestate=self.context.tracestate,
                start_ns=self._start_ns,
                end_ns=end_ns,
                attributes=self.attributes,
                error=self._error,
                events=events,
            )
        )

    def update(self, attributes: Mapping[str, AttributeValue]) -> None:
        """Add ``attributes`` to the span."""
        if self.attributes is not None:
            self.attributes.update(attributes)

    def set_status(self, status: int) -> None:
        """The HTTP status a request was answered with (a gRPC call: the one its
        error maps to, as in its observation); 500 and above marks the span as
        an error (a client's 4xx is not the server's fault)."""
        if self.attributes is None:
            return
        self.attributes["rayfleet.status"] = status
        if status >= 500:
            self._error = ""

    def record_run(self, model_ms: float, batch_size: int, elapsed_ms: float) -> None:
        """What a version's run of one request cost: the model's time (its
        batch's, when batched), the batch's size, and the rest of the time it
        spent with the version (``queue_wait_ms``: its queue, waiting for
        company, stacking)."""
        self.update(
            {
                "rayfleet.model_ms": model_ms,
                "rayfleet.batch_size": batch_size,
                "rayfleet.queue_wait_ms": max(0.0, elapsed_ms - model_ms),
            }
        )


def _open_request() -> ActiveSpan | None:
    current = current_span()
    return current.request if isinstance(current, ActiveSpan) else None


def _exception_event(error: Exception, time_ns: int) -> SpanEvent:
    # OpenTelemetry's semantic conventions for an exception, without the
    # stack trace: the process's log has it, and formatting it costs.
    kind = type(error)
    return SpanEvent(
        "exception",
        time_ns,
        {
            "exception.type": f"{kind.__module__}.{kind.__qualname__}",
            "exception.message": str(error),
        },
    )


class Tracing:
    """Spans of one router or replica process, sent as ``spec`` says.

    ``sink`` replaces the OTLP/HTTP sender: it gets each encoded request body
    (tests pass one that decodes them).
    """

    def __init__(self, spec: TracingSpec, sink: Sink | None = None) -> None:
        if sink is None:
            if spec.otlp_endpoint is None:
                raise ValueError("tracing needs an otlp_endpoint to send spans to")
            sink = OtlpHttpSender(spec.otlp_endpoint)
        self.sink = sink
        # TraceIdRatioBased's rule: a new trace is kept when the low 64 bits of
        # its id fall under the rate's share of them.
        self._bound = round(spec.sample_rate * (_ID_BITS_LOW + 1))
        # The SDK's resource detection, once: it honours
        # OTEL_RESOURCE_ATTRIBUTES (the spec's service name wins over it).
        detected = Resource.create({SERVICE_NAME: spec.service_name}).attributes
        self.resource: dict[str, AttributeValue] = {
            key: value if isinstance(value, str | bool | int | float) else str(value)
            for key, value in detected.items()
        }
        # The spans are rayfleet's making, not the SDK's.
        self.resource["telemetry.sdk.name"] = "rayfleet"
        self.resource["telemetry.sdk.version"] = PACKAGE_VERSION
        self.dropped = 0
        self.undelivered = 0
        self._every_s = spec.export_every_s
        self._encoder = SpanEncoder(REPEATED_ATTRIBUTES)
        self._held: deque[bytes] = deque()
        self._wake = threading.Event()
        self._draining = threading.Lock()
        self._closed = False
        self._warned_at = float("-inf")
        self._thread = threading.Thread(
            target=self._send_loop, name="rayfleet tracing export", daemon=True
        )
        self._thread.start()

    def samples(self, trace_id: int) -> bool:
        """Whether a new trace with this id is kept."""
        return (trace_id & _ID_BITS_LOW) < self._bound

    def request_span(
        self, carrier: Mapping[str, str], attributes: dict[str, AttributeValue]
    ) -> ActiveSpan:
        """The router's span of one request, for a ``with`` block: its parent is
        the span a valid ``traceparent`` in ``carrier`` (the request's headers,
        or gRPC metadata) names, else it starts a trace. ``attributes`` become
        the span's, with what the block adds."""
        return ActiveSpan(
            self,
            REQUEST_SPAN,
            KIND_SERVER,
            context_from(carrier),
            attributes,
            parent_is_remote=True,
            is_request=True,
        )

    def annotate_choice(
        self,
        model: str,
        version: str,
        choice: Choice,
        request_id: str | None,
        rows: int,
    ) -> None:
        """Name, on the request span open here (if any), the version the service
        chose and how, the request's ``x-request-id`` (the one its log lines and
        request log row carry) and its number of rows."""
        request = _open_request()
        if request is None or request.attributes is None:
            return
        attributes = request.attributes
        attributes["rayfleet.model"] = model
        attributes["rayfleet.version"] = version
        attributes["rayfleet.choice"] = choice
        attributes["rayfleet.rows"] = rows
        if request_id is not None:
            attributes["rayfleet.request_id"] = request_id

    def request_sampled(self) -> bool:
        """Whether the request span open here is kept (sampled). A version run
        in the router makes its own span only then: under a request span that
        is not kept, the child would not be kept either."""
        request = _open_request()
        return request is not None and request.attributes is not None

    def replica_span(
        self,
        model: str,
        version: str,
        placement: str,
        carrier: Mapping[str, str] | None = None,
    ) -> ActiveSpan:
        """The span of a version's run of one request, for a ``with`` block: a
        child of the span ``carrier`` names (sent by the router with the
        request), or without one of the span current here."""
        request = None
        if carrier is None:
            current = current_span()
            parent = None if current is None else current.context
            if isinstance(current, ActiveSpan):
                request = current.request
        else:
            parent = context_from(carrier)
        attributes: dict[str, AttributeValue] = {
            "rayfleet.model": model,
            "rayfleet.version": version,
            "rayfleet.placement": placement,
        }
        return ActiveSpan(
            self,
            REPLICA_SPAN,
            KIND_INTERNAL,
            parent,
            attributes,
            parent_is_remote=carrier is not None,
            is_request=False,
            request=request,
        )

    def record(self, span: FinishedSpan) -> None:
        """Write an ended span and queue it to be sent; dropped and counted when
        :data:`MAX_HELD` wait already (a collector slower than the traffic)."""
        held = self._held
        if len(held) >= MAX_HELD or self._closed:
            self.dropped += 1
            self._warn("dropped")
            return
        try:
            encoded = self._encoder.span(span)
        except Exception:  # a span must never fail the request it describes
            logger.exception("tracing: a span could not be encoded")
            self.dropped += 1
            return
        held.append(encoded)
        if len(held) == EXPORT_BATCH:
            self._wake.set()

    def flush(self) -> None:
        """Send every span queued so far, in this thread."""
        with self._draining:
            held = self._held
            while held:
                batch = [held.popleft() for _ in range(min(len(held), EXPORT_BATCH))]
                body = self._encoder.request(
                    batch, self.resource, "rayfleet", PACKAGE_VERSION
                )
                try:
                    delivered = self.sink(body)
                except Exception:  # a sink's bug must not end the export thread
                    logger.exception("tracing: sending spans failed")
                    delivered = False
                if not delivered:
                    self.undelivered += len(batch)
                    self._warn("undelivered")

    def close(self, timeout_s: float = 5.0) -> None:
        """Send the spans still held and stop, waiting ``timeout_s`` at most;
        once. A collector that does not answer in time costs the spans left,
        not a stopping replica's shutdown."""
        if self._closed:
            return
        self._closed = True
        self._wake.set()
        # A replica's __del__ may run on any thread the garbage collector
        # interrupts, this one's included, which cannot wait for itself.
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout_s)

    def _send_loop(self) -> None:
        while True:
            self._wake.wait(self._every_s)
            self._wake.clear()
            closing = self._closed
            self.flush()
            if closing:
                return

    def _warn(self, what: str) -> None:
        now = time.monotonic()
        if now - self._warned_at < _WARN_EVERY_S:
            return
        self._warned_at = now
        logger.warning(
            "tracing: spans lost so far: %d dropped (queue full, closed or not "
            "encodable), %d not taken by the collector (last: %s; the "
            "collector's last failure: %s)",
            self.dropped,
            self.undelivered,
            what,
            getattr(self.sink, "last_failure", None) or "none",
        )


def choice_of(pin: str | None, sticky_key: str | None) -> Choice:
    """How :meth:`~rayfleet.platform.serving.traffic.TrafficPlan.choose` picks a
    version with these arguments."""
    if pin is not None:
        return "pin"
    return "weight" if sticky_key is None else "sticky"


def tracing_for(spec: TracingSpec, sink: Sink | None = None) -> Tracing | None:
    """A :class:`Tracing` when ``spec`` turns tracing on, else ``None``."""
    return Tracing(spec, sink) if spec.enabled else None
