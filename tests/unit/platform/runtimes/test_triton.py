"""TritonRuntime's call to its server, over a stand-in client: the current span's
``traceparent`` goes along as a header."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from rayfleet.platform.config.signature import Signature, TensorSpec
from rayfleet.platform.config.spec import TritonTarget
from rayfleet.platform.runtimes.device import REMOTE, Device
from rayfleet.platform.runtimes.triton import TritonRuntime
from tests.unit.platform.tracing.memory import memory_tracing

SIGNATURE = Signature(
    inputs=(TensorSpec(name="x", datatype="FP32", shape=(-1, 3)),),
    outputs=(TensorSpec(name="y", datatype="FP32", shape=(-1,)),),
)


class Result:
    def __init__(self, outputs: dict[str, np.ndarray]) -> None:
        self.outputs = outputs

    def as_numpy(self, name: str) -> np.ndarray:
        return self.outputs[name]


class Client:
    """Answers every infer with row sums and keeps the arguments it was given."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    def infer(self, model_name: str, inputs: list[Any], **options: Any) -> Result:
        self.calls.append(options)
        return Result({"y": np.array([3.0, 3.0], dtype=np.float32)})


@pytest.fixture
def runtime() -> Iterator[tuple[TritonRuntime, Client]]:
    target = TritonTarget(url="127.0.0.1:8000", model_name="summer")
    runtime = TritonRuntime(
        target, SIGNATURE, device=Device(provider=REMOTE, gpu_requested=False)
    )
    runtime.client.close()
    client = Client()
    runtime.client = client  # type: ignore[assignment]
    yield runtime, client


ROWS = {"x": np.ones((2, 3), dtype=np.float32)}


def test_outside_a_trace_no_header_is_sent(
    runtime: tuple[TritonRuntime, Client],
) -> None:
    triton, client = runtime
    assert triton.predict(ROWS)["y"].tolist() == [3.0, 3.0]
    (call,) = client.calls
    assert call["headers"] is None


def test_the_current_span_traceparent_is_sent(
    runtime: tuple[TritonRuntime, Client],
) -> None:
    triton, client = runtime
    with memory_tracing() as memory:
        with memory.tracing.replica_span("summer", "v1", "replica") as span:
            triton.predict(ROWS)
        context = span.context
    (call,) = client.calls
    assert set(call["headers"]) == {"traceparent"}
    assert call["headers"]["traceparent"].split("-")[1:3] == [
        f"{context.trace_id:032x}",
        f"{context.span_id:016x}",
    ]
