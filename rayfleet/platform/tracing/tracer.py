"""One process's spans: a tracer provider built from the spec, and the two spans
of an inference request.

- ``rayfleet.infer`` (SERVER) is the router's span of a request, from the route
  to the answer: its parent is the caller's ``traceparent`` when one came, and
  the service adds which version answered and how it was chosen.
- ``rayfleet.replica`` (INTERNAL) is the span of the version's run, a child of
  the router's: in a model replica, whose parent arrives with the request over
  the Ray hop, or in the router itself for a version placed there, so a trace
  looks the same wherever a version runs.

Spans leave in batches from the SDK's own thread (``BatchSpanProcessor``), never
on the request path; a process flushes what it holds when it stops. With tracing
off, nothing here is built: callers hold ``None`` instead of a :class:`Tracing`
and check that once per request.

A span costs the SDK tens of microseconds, a good part of them per attribute
call, on a router that spends well under a millisecond on a small model's
request. So each span here is started without the SDK's nested context managers
and gets its attributes in one call, when it ends.
"""

from __future__ import annotations

import contextvars
import threading
from collections.abc import Mapping
from contextvars import Token
from types import TracebackType
from typing import Literal

from opentelemetry.context import Context, attach, detach
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from opentelemetry.trace import Span, SpanKind, StatusCode, set_span_in_context
from opentelemetry.util.types import AttributeValue

from rayfleet.platform.config.tracing import TracingSpec
from rayfleet.platform.constants import PACKAGE_VERSION
from rayfleet.platform.errors import RayfleetError, http_status
from rayfleet.platform.tracing.propagation import context_from

__all__ = [
    "REPLICA_SPAN",
    "REQUEST_SPAN",
    "ActiveSpan",
    "Choice",
    "Tracing",
    "choice_of",
    "tracing_for",
]

REQUEST_SPAN = "rayfleet.infer"
REPLICA_SPAN = "rayfleet.replica"

# How the service chose the version: a pin (URL or x-model-version), the sticky
# key's hash, or the traffic plan's weighted draw.
Choice = Literal["pin", "sticky", "weight"]

# The request span open in this context, for the service to name its version on.
_REQUEST: contextvars.ContextVar[ActiveSpan | None] = contextvars.ContextVar(
    "rayfleet_request_span", default=None
)


class ActiveSpan:
    """A started span (``span``, the SDK's), current while its ``with`` block
    runs; its attributes are kept here and given to it once, as it ends.

    An exception leaving the block is recorded on the span; a request span also
    gets the HTTP status it is answered with
    (:func:`~rayfleet.platform.errors.http_status`, 500 for a bug).
    """

    __slots__ = (
        "_context",
        "_is_request",
        "_request_token",
        "_token",
        "attributes",
        "span",
    )

    def __init__(
        self,
        span: Span,
        parent: Context | None,
        attributes: dict[str, AttributeValue],
        *,
        is_request: bool,
    ) -> None:
        self.span = span
        # Not sampled: nothing is kept, so nothing need be collected.
        self.attributes = attributes if span.is_recording() else None
        self._is_request = is_request
        self._context = set_span_in_context(span, parent)
        self._token: Token[Context] | None = None
        self._request_token: Token[ActiveSpan | None] | None = None

    def __enter__(self) -> ActiveSpan:
        self._token = attach(self._context)
        if self._is_request:
            self._request_token = _REQUEST.set(self)
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._request_token is not None:
            _REQUEST.reset(self._request_token)
        if self._token is not None:
            detach(self._token)
        span = self.span
        if self.attributes is not None:
            if isinstance(error, Exception):
                span.record_exception(error)
                if self._is_request:
                    self.set_status(
                        http_status(error) if isinstance(error, RayfleetError) else 500
                    )
                else:
                    span.set_status(StatusCode.ERROR, type(error).__name__)
            span.set_attributes(self.attributes)
        span.end()

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
            self.span.set_status(StatusCode.ERROR)

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


class Tracing:
    """Spans of one router or replica process, exported as ``spec`` says.

    ``exporter`` replaces the OTLP/HTTP exporter (tests pass an in-memory one).
    """

    def __init__(self, spec: TracingSpec, exporter: SpanExporter | None = None) -> None:
        if exporter is None:
            # Imported here: only a process that sends spans loads it (and the
            # HTTP client and protobuf modules it brings).
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
                OTLPSpanExporter,
            )

            exporter = OTLPSpanExporter(endpoint=spec.otlp_endpoint)
        self.provider = TracerProvider(
            sampler=ParentBased(TraceIdRatioBased(spec.sample_rate)),
            resource=Resource.create({SERVICE_NAME: spec.service_name}),
        )
        self.provider.add_span_processor(
            BatchSpanProcessor(
                exporter, schedule_delay_millis=spec.export_every_s * 1000
            )
        )
        self._tracer = self.provider.get_tracer("rayfleet", PACKAGE_VERSION)
        self._closed = False

    def request_span(
        self, carrier: Mapping[str, str], attributes: dict[str, AttributeValue]
    ) -> ActiveSpan:
        """The router's span of one request, for a ``with`` block: its parent is
        the span a valid ``traceparent`` in ``carrier`` (the request's headers,
        or gRPC metadata) names, else it starts a trace. ``attributes`` become
        the span's, with what the block adds."""
        parent = context_from(carrier)
        span = self._tracer.start_span(
            REQUEST_SPAN,
            parent,
            SpanKind.SERVER,
            record_exception=False,
            set_status_on_exception=False,
        )
        return ActiveSpan(span, parent, attributes, is_request=True)

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
        request = _REQUEST.get()
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
        is not kept, the child would not be kept either, and starting it was
        half of what tracing cost a request that sampling leaves out."""
        request = _REQUEST.get()
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
        parent = None if carrier is None else context_from(carrier)
        span = self._tracer.start_span(
            REPLICA_SPAN,
            parent,
            SpanKind.INTERNAL,
            record_exception=False,
            set_status_on_exception=False,
        )
        attributes: dict[str, AttributeValue] = {
            "rayfleet.model": model,
            "rayfleet.version": version,
            "rayfleet.placement": placement,
        }
        return ActiveSpan(span, parent, attributes, is_request=False)

    def close(self, timeout_s: float = 5.0) -> None:
        """Send the spans still held and stop, waiting ``timeout_s`` at most;
        once.

        The SDK's own flush ignores its timeout and retries each batch for up to
        10 s against a collector that is down: a stopping replica would stall
        its shutdown. So the SDK stops in a thread of its own, and a collector
        that does not answer in time costs the spans left, not the wait.
        """
        if self._closed:
            return
        self._closed = True
        stopping = threading.Thread(
            target=self.provider.shutdown, name="rayfleet tracing close", daemon=True
        )
        stopping.start()
        stopping.join(timeout_s)


def choice_of(pin: str | None, sticky_key: str | None) -> Choice:
    """How :meth:`~rayfleet.platform.serving.traffic.TrafficPlan.choose` picks a
    version with these arguments."""
    if pin is not None:
        return "pin"
    return "weight" if sticky_key is None else "sticky"


def tracing_for(
    spec: TracingSpec, exporter: SpanExporter | None = None
) -> Tracing | None:
    """A :class:`Tracing` when ``spec`` turns tracing on, else ``None``."""
    return Tracing(spec, exporter) if spec.enabled else None
