"""A request's trace across the Ray hop, without Ray: the router's ServeBackend
sends its span's context with the request, and a ModelReplica (its class, built
here as Serve would) runs it in a span under that one.

Router and replica each have their own tracing, as two processes do, and the
stand-in handle runs the replica's call in an empty context: the carrier is the
only link between the two spans.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

import rayfleet.deployments.replica as replica_module
from rayfleet.deployments.health import DeploymentHealth
from rayfleet.deployments.replica import ModelReplica
from rayfleet.deployments.router import ServeBackend
from rayfleet.platform.config.signature import Signature, TensorSpec
from rayfleet.platform.config.store import MANIFEST, Manifest, PythonEntry
from rayfleet.platform.config.tracing import TracingSpec
from rayfleet.platform.serving.inprocess import InProcessBackend
from rayfleet.platform.serving.service import ReplicaResult
from rayfleet.platform.tracing import REPLICA_SPAN, Tracing
from tests.unit.platform.tracing.memory import ENDPOINT, MemoryTracing, memory_tracing

# Writes the traceparent each model call ran under beside its files, as a Triton
# runtime would send it.
PREDICT = """
from pathlib import Path
from rayfleet.platform.tracing import trace_headers

def load(version_dir):
    log = Path(version_dir) / "traceparents.txt"
    def predict(inputs):
        with log.open("a") as out:
            out.write(trace_headers().get("traceparent", "-") + "\\n")
        return {"y": inputs["x"].sum(axis=1)}
    return predict
"""

SIGNATURE = Signature(
    inputs=(TensorSpec(name="x", datatype="FP32", shape=(-1, 3)),),
    outputs=(TensorSpec(name="y", datatype="FP32", shape=(-1,)),),
)
ROWS = {"x": np.ones((2, 3), dtype=np.float32)}
TRACED = TracingSpec(enabled=True, otlp_endpoint=ENDPOINT).model_dump(mode="json")


@pytest.fixture
def store(tmp_path: Path) -> Path:
    manifest = Manifest(
        runtime="python",
        signature=SIGNATURE,
        python=PythonEntry(callable="traced_predict:load"),
    )
    folder = tmp_path / "summer" / "v2"
    folder.mkdir(parents=True)
    (folder / MANIFEST).write_text(manifest.to_json())
    (folder / "traced_predict.py").write_text(PREDICT)
    return tmp_path


@pytest.fixture
def replica_side(monkeypatch: pytest.MonkeyPatch) -> Iterator[MemoryTracing]:
    """The replica's tracing: what its constructor builds from a spec that turns
    tracing on; logging left as the test session has it."""
    with memory_tracing() as memory:

        def built(spec: TracingSpec) -> Tracing | None:
            return memory.tracing if spec.enabled else None

        monkeypatch.setattr(replica_module, "tracing_for", built)
        monkeypatch.setattr(replica_module, "send_to_serve", lambda: None)
        yield memory


class Hop:
    """A deployment handle to one ModelReplica: the call runs as in another
    process, with no context of the caller's, and with the arguments given."""

    def __init__(self, replica: Any) -> None:
        self.replica = replica
        self.calls: list[tuple[Any, ...]] = []
        self.infer = SimpleNamespace(remote=self._remote)

    async def _remote(self, *args: Any) -> ReplicaResult:
        self.calls.append(args)
        call = self.replica.infer(*args)
        task = contextvars.Context().run(asyncio.ensure_future, call)
        result: ReplicaResult = await task
        return result


def make_replica(store: Path, tracing: dict[str, Any] | None, **batching: Any) -> Any:
    manifest = Manifest.model_validate_json(
        (store / "summer" / "v2" / MANIFEST).read_text()
    )
    version = {"name": "v2", "batching": {"max_batch_size": 8, **batching}}
    cls: Any = ModelReplica.func_or_class  # type: ignore[attr-defined]
    return cls(
        "summer",
        version,
        manifest.model_dump(mode="json"),
        str(store),
        None,
        5.0,
        tracing,
    )


def backend(hop: Hop, traced: bool) -> ServeBackend:
    unused = DeploymentHealth("app", max_age_s=1.0, status=lambda: None)  # type: ignore[arg-type,return-value]
    return ServeBackend(
        {"summer": {"v2": hop}},  # type: ignore[dict-item]
        InProcessBackend({}),
        unused,
        traced=traced,
    )


def model_traceparents(store: Path) -> list[str]:
    lines = (store / "summer/v2/traceparents.txt").read_text().split()
    # The first two are the warm-up calls, made before any request.
    assert lines[:2] == ["-", "-"]
    return lines[2:]


def test_the_replica_span_is_a_child_of_the_router_span(
    store: Path, replica_side: MemoryTracing
) -> None:
    async def scenario(router: MemoryTracing) -> ReplicaResult:
        hop = Hop(make_replica(store, TRACED))
        with router.tracing.request_span({}, {}):
            result = await backend(hop, traced=True).infer("summer", "v2", ROWS)
        (args,) = hop.calls
        assert set(args[1]) == {"traceparent"}
        return result

    with memory_tracing() as router:
        result = asyncio.run(scenario(router))
        (request,) = router.spans()
    (run,) = replica_side.named(REPLICA_SPAN)
    assert result.outputs["y"].tolist() == [3.0, 3.0]
    assert request.context is not None and run.context is not None
    assert run.context.trace_id == request.context.trace_id
    assert run.parent is not None and run.parent.is_remote
    assert run.parent.span_id == request.context.span_id
    attributes = dict(run.attributes or {})
    assert attributes["rayfleet.placement"] == "replica"
    assert attributes["rayfleet.version"] == "v2"
    assert attributes["rayfleet.batch_size"] == 1
    assert attributes["rayfleet.model_ms"] == result.model_ms
    assert float(attributes["rayfleet.queue_wait_ms"]) >= 0  # type: ignore[arg-type]
    (sent,) = model_traceparents(store)
    assert sent.split("-")[1:3] == [
        f"{run.context.trace_id:032x}",
        f"{run.context.span_id:016x}",
    ]


def test_a_batch_runs_under_its_first_request_span(
    store: Path, replica_side: MemoryTracing
) -> None:
    async def scenario(router: MemoryTracing) -> None:
        replica = make_replica(store, TRACED, batch_wait_timeout_s=0.2)
        traced = backend(Hop(replica), traced=True)

        async def one() -> None:
            with router.tracing.request_span({}, {}):
                await traced.infer("summer", "v2", ROWS)

        await asyncio.gather(one(), one(), one())

    with memory_tracing() as router:
        asyncio.run(scenario(router))
        requests = router.spans()
    runs = sorted(
        replica_side.named(REPLICA_SPAN), key=lambda span: span.start_time or 0
    )
    assert len(requests) == len(runs) == 3
    assert {run.context.trace_id for run in runs if run.context} == {
        request.context.trace_id for request in requests if request.context
    }
    sizes = [dict(run.attributes or {})["rayfleet.batch_size"] for run in runs]
    assert sizes == [3, 3, 3]
    # One model call, which carried the first request's context on.
    (sent,) = model_traceparents(store)
    first = runs[0].context
    assert first is not None
    assert sent.split("-")[2] == f"{first.span_id:016x}"


def test_untraced_the_call_and_the_replica_are_as_before(
    store: Path, replica_side: MemoryTracing
) -> None:
    async def scenario() -> tuple[Hop, Any]:
        replica = make_replica(store, None)
        hop = Hop(replica)
        await backend(hop, traced=False).infer("summer", "v2", ROWS)
        return hop, replica

    hop, replica = asyncio.run(scenario())
    assert [len(args) for args in hop.calls] == [1]
    assert replica.tracing is None
    assert not replica.runner.batcher.carry_context
    assert replica_side.spans() == []
    assert model_traceparents(store) == ["-"]
