"""InferenceService on its own: zero-row requests and what it records."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pytest

from rayfleet.platform.config.signature import Signature
from rayfleet.platform.config.spec import parse_spec
from rayfleet.platform.config.store import Manifest
from rayfleet.platform.errors import InvalidInput, ModelError
from rayfleet.platform.protocol.types import InferRequest
from rayfleet.platform.serving import service as service_module
from rayfleet.platform.serving.service import InferenceService, ReplicaResult
from rayfleet.platform.serving.traffic import TrafficPlan
from rayfleet.platform.validation.observation import Observation

BATCHED = Signature.model_validate(
    {
        "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 4]}],
        "outputs": [
            {"name": "label", "datatype": "INT64", "shape": [-1]},
            {"name": "probabilities", "datatype": "FP32", "shape": [-1, 3]},
        ],
    }
)
POOLED = Signature.model_validate(
    {
        "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 4]}],
        "outputs": [{"name": "mean", "datatype": "FP32", "shape": [4]}],
    }
)


class Backend:
    """Answers every request with one label per row, and counts the calls."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, int]] = []

    async def infer(
        self, model: str, version: str, inputs: dict[str, np.ndarray]
    ) -> ReplicaResult:
        rows = len(inputs["x"])
        self.calls.append((version, rows))
        outputs = {
            "label": np.arange(rows, dtype=np.int64),
            "probabilities": np.full((rows, 3), 1 / 3, dtype=np.float32),
        }
        return ReplicaResult(outputs, 2.0, 1)

    async def ready(self, model: str, version: str) -> bool:
        return True


class Recorder:
    def __init__(self) -> None:
        self.observations: list[Observation] = []

    def record(self, observation: Observation) -> None:
        self.observations.append(observation)


def build(
    tmp_path: Path, signature: Signature = BATCHED
) -> tuple[InferenceService, Backend, Recorder]:
    spec = parse_spec(
        {
            "store": str(tmp_path),
            "observations": {"sample_rate": 1.0},
            "models": [
                {
                    "name": "m",
                    "versions": [{"name": "a"}, {"name": "b", "weight": 0}],
                }
            ],
        }
    )
    manifest = Manifest(runtime="python", signature=signature)
    backend, recorder = Backend(), Recorder()
    service = InferenceService(
        spec, {"m": {"a": manifest, "b": manifest}}, backend, recorder
    )
    return service, backend, recorder


def rows(count: int) -> InferRequest:
    return InferRequest({"x": np.ones((count, 4), dtype=np.float32)}, {"x": "FP32"})


def test_zero_rows_are_answered_from_the_signature(tmp_path: Path) -> None:
    service, backend, recorder = build(tmp_path)
    # A shadow on every request: a zero-row request must not start one either.
    service.update_plans({"m": TrafficPlan("m", {"a": 100.0, "b": 0.0}, "b", 100.0)})

    outcome = asyncio.run(service.infer("m", rows(0)))

    outputs = outcome.response.outputs
    assert outputs["label"].shape == (0,) and outputs["label"].dtype == np.int64
    assert outputs["probabilities"].shape == (0, 3)
    assert outputs["probabilities"].dtype == np.float32
    assert (outcome.version, outcome.batch_size, outcome.model_ms) == ("a", 0, 0.0)
    assert backend.calls == []
    [seen] = recorder.observations
    assert (seen.status, seen.features, seen.prediction, seen.confidence) == (
        200,
        None,
        None,
        None,
    )


def test_zero_rows_without_an_empty_answer_are_the_clients_error(
    tmp_path: Path,
) -> None:
    service, backend, recorder = build(tmp_path, POOLED)
    with pytest.raises(InvalidInput, match="zero rows"):
        asyncio.run(service.infer("m", rows(0)))
    assert backend.calls == []
    assert [o.status for o in recorder.observations] == [400]


def test_a_failing_summary_never_fails_an_answered_request(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    service, _, recorder = build(tmp_path)

    def broken(outputs: object) -> None:
        raise ValueError("a summary bug")

    monkeypatch.setattr(service_module, "summarize_outputs", broken)
    outcome = asyncio.run(service.infer("m", rows(2)))
    assert outcome.response.outputs["label"].tolist() == [0, 1]
    [seen] = recorder.observations
    assert seen.status == 200 and seen.prediction is None


class Logged:
    """A request log that keeps every call, or raises when told to."""

    def __init__(self, broken: bool = False) -> None:
        self.calls: list[dict[str, object]] = []
        self.broken = broken

    def record(
        self,
        request_id: str,
        model: str,
        version: str,
        status: int,
        latency_ms: float,
        model_ms: float,
        inputs: Mapping[str, np.ndarray],
        outputs: Mapping[str, np.ndarray] | None,
        shadow_of: str | None = None,
    ) -> None:
        if self.broken:
            raise RuntimeError("a request log bug")
        self.calls.append(
            {
                "id": request_id,
                "version": version,
                "status": status,
                "model_ms": model_ms,
                "inputs": inputs,
                "outputs": outputs,
                "shadow_of": shadow_of,
                "latency": latency_ms > 0,
            }
        )


class Failing(Backend):
    async def infer(
        self, model: str, version: str, inputs: dict[str, np.ndarray]
    ) -> ReplicaResult:
        raise ModelError("the model raised")


def test_the_request_log_gets_the_tensors_the_service_already_holds(
    tmp_path: Path,
) -> None:
    service, _, _ = build(tmp_path)
    service.request_log = log = Logged()
    request = rows(3)
    outcome = asyncio.run(service.infer("m", request, request_id="req-1"))
    [call] = log.calls
    assert (call["id"], call["version"], call["status"], call["shadow_of"]) == (
        "req-1",
        "a",
        200,
        None,
    )
    assert call["model_ms"] == 2.0 and call["latency"]
    # The very arrays: nothing decoded or copied for the log.
    assert call["inputs"] is request.inputs
    assert call["outputs"] is outcome.response.outputs


def test_a_shadow_is_logged_with_its_primary_and_errors_after_the_check_too(
    tmp_path: Path,
) -> None:
    service, _, _ = build(tmp_path)
    service.request_log = log = Logged()
    service.update_plans({"m": TrafficPlan("m", {"a": 100.0, "b": 0.0}, "b", 100.0)})

    async def with_shadow() -> None:
        await service.infer("m", rows(2), request_id="req-2")
        await asyncio.gather(*service._shadows)

    asyncio.run(with_shadow())
    assert [(c["id"], c["version"], c["shadow_of"]) for c in log.calls] == [
        ("req-2", "a", None),
        ("req-2", "b", "a"),
    ]
    log.calls.clear()
    service.update_plans({"m": TrafficPlan("m", {"a": 100.0, "b": 0.0})})
    service.backend = Failing()
    with pytest.raises(ModelError):
        asyncio.run(service.infer("m", rows(2), request_id="req-3"))
    # A client's mistake is no traffic to replay: its inputs fit no model.
    bad = InferRequest({"x": np.ones((2, 5), dtype=np.float32)}, {"x": "FP32"})
    with pytest.raises(InvalidInput):
        asyncio.run(service.infer("m", bad, request_id="req-4"))
    # Without an id (no ingress named the request) nothing is logged.
    with pytest.raises(ModelError):
        asyncio.run(service.infer("m", rows(2)))
    assert [(c["id"], c["status"], c["outputs"]) for c in log.calls] == [
        ("req-3", 500, None)
    ]


def test_a_failing_request_log_never_fails_an_answered_request(
    tmp_path: Path,
) -> None:
    service, _, _ = build(tmp_path)
    service.request_log = Logged(broken=True)
    outcome = asyncio.run(service.infer("m", rows(2), request_id="req-5"))
    assert outcome.response.outputs["label"].tolist() == [0, 1]
