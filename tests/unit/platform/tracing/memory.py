"""A :class:`Tracing` whose spans stay in memory, for tests that read them back."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
    InMemorySpanExporter,
)

from rayfleet.platform.config.tracing import TracingSpec
from rayfleet.platform.tracing import Tracing

ENDPOINT = "http://collector.invalid:4318/v1/traces"


class MemoryTracing:
    """A tracing of its own, and the spans it finished so far."""

    def __init__(self, **spec: Any) -> None:
        self.exporter = InMemorySpanExporter()
        self.tracing = Tracing(
            TracingSpec(enabled=True, otlp_endpoint=ENDPOINT, **spec), self.exporter
        )

    def spans(self) -> list[ReadableSpan]:
        """Every span finished, oldest first."""
        self.tracing.provider.force_flush()
        return list(self.exporter.get_finished_spans())

    def named(self, name: str) -> list[ReadableSpan]:
        """The finished spans called ``name``."""
        return [span for span in self.spans() if span.name == name]


@contextmanager
def memory_tracing(**spec: Any) -> Iterator[MemoryTracing]:
    """A :class:`MemoryTracing`, closed on the way out."""
    memory = MemoryTracing(**spec)
    try:
        yield memory
    finally:
        memory.tracing.close()


def traceparent(trace_id: int, span_id: int, sampled: bool = True) -> str:
    """A W3C ``traceparent`` header value."""
    return f"00-{trace_id:032x}-{span_id:016x}-{'01' if sampled else '00'}"
