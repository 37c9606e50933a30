"""OnnxRuntime on this machine's CPU-only onnxruntime: the device it reports, and
the fallback of a version that asked for a GPU, warned once or refused."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from rayfleet.platform.config.signature import Signature, TensorSpec
from rayfleet.platform.config.spec import VersionSpec
from rayfleet.platform.config.store import Manifest
from rayfleet.platform.errors import ConfigError
from rayfleet.platform.runtimes import load_runtime
from rayfleet.platform.runtimes.device import CPU, CUDA, Device
from rayfleet.platform.runtimes.onnx import OnnxRuntime

SIGNATURE = Signature(
    inputs=(TensorSpec(name="x", datatype="FP32", shape=(-1, 2)),),
    outputs=(TensorSpec(name="y", datatype="FP32", shape=(-1, 2)),),
)
# What onnxruntime says when asked for a provider its build lacks.
NOT_IN_BUILD = "Specified provider 'CUDAExecutionProvider' is not in available"


@pytest.fixture
def model(tmp_path: Path) -> Path:
    """y = x + x, as ``model.onnx``."""
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "x"], ["y"])],
        "double",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 2])],
    )
    onnx_model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx_model.ir_version = 9  # what every onnxruntime of the last years reads
    path = tmp_path / "model.onnx"
    path.write_bytes(onnx_model.SerializeToString())
    return path


@pytest.fixture
def cuda_listed(monkeypatch: pytest.MonkeyPatch) -> None:
    """onnxruntime lists CUDA, as onnxruntime-gpu does on a node whose CUDA
    libraries are missing; sessions still run on this build's CPU."""
    monkeypatch.setattr(ort, "get_available_providers", lambda: [CUDA, CPU])


def _runtime(path: Path, *, gpu: bool, require_gpu: bool = False) -> OnnxRuntime:
    return OnnxRuntime(
        path,
        SIGNATURE,
        where="double/v1",
        num_cpus=1,
        gpu_requested=gpu,
        require_gpu=require_gpu,
    )


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        record.getMessage()
        for record in caplog.records
        if record.name == "ray.serve" and record.levelno == logging.WARNING
    ]


def _answers(runtime: OnnxRuntime) -> bool:
    x = np.array([[1.0, 2.0]], dtype=np.float32)
    return bool(np.array_equal(runtime.predict({"x": x})["y"], x * 2))


def test_a_cpu_version_runs_on_cpu_without_a_warning(
    model: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="ray.serve"):
        runtime = _runtime(model, gpu=False)
    assert runtime.device == Device(CPU, False)
    assert _warnings(caplog) == []
    assert _answers(runtime)


def test_a_gpu_version_on_a_build_without_cuda_warns_once_and_serves(
    model: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="ray.serve"):
        runtime = _runtime(model, gpu=True)
    assert runtime.device == Device(CPU, True)
    [warning] = _warnings(caplog)
    assert warning.startswith(
        "double/v1 asked for a GPU (num_gpus > 0) but onnxruntime runs it on "
        "CPUExecutionProvider: this onnxruntime build has no CUDAExecutionProvider"
    )
    assert _answers(runtime)


@pytest.mark.filterwarnings(f"ignore:{NOT_IN_BUILD}:UserWarning")
def test_a_session_that_falls_back_from_a_listed_cuda_warns_once_and_serves(
    model: Path, cuda_listed: None, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="ray.serve"):
        runtime = _runtime(model, gpu=True)
        assert _answers(runtime)
        assert _answers(runtime)
    assert runtime.session.get_providers() == [CPU]
    assert runtime.device == Device(CPU, True)
    [warning] = _warnings(caplog)
    assert "onnxruntime offers CUDAExecutionProvider but the session runs" in warning
    assert warning.endswith("set require_gpu: true on the version to fail instead")


@pytest.mark.filterwarnings(f"ignore:{NOT_IN_BUILD}:UserWarning")
def test_require_gpu_fails_the_load_with_what_to_fix(
    model: Path, cuda_listed: None, caplog: pytest.LogCaptureFixture
) -> None:
    with (
        caplog.at_level(logging.WARNING, logger="ray.serve"),
        pytest.raises(ConfigError) as raised,
    ):
        _runtime(model, gpu=True, require_gpu=True)
    assert "the CUDA or cuDNN libraries it needs did not load" in str(raised.value)
    assert "The version sets require_gpu, so it does not start on CPU" in str(
        raised.value
    )
    assert _warnings(caplog) == []


def test_a_session_that_cannot_open_with_cuda_is_opened_on_cpu(
    model: Path,
    cuda_listed: None,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Some onnxruntime-gpu builds raise instead of falling back by themselves.
    real = ort.InferenceSession
    asked: list[list[str]] = []

    def session(path: str, *, providers: Sequence[str], **kwargs: Any) -> Any:
        asked.append(list(providers))
        if CUDA in providers:
            raise RuntimeError("CUDA failure 100: no CUDA-capable device is detected")
        return real(path, providers=providers, **kwargs)

    monkeypatch.setattr(ort, "InferenceSession", session)
    with caplog.at_level(logging.WARNING, logger="ray.serve"):
        runtime = _runtime(model, gpu=True)
    assert asked == [[CUDA, CPU], [CPU]]
    assert runtime.device == Device(CPU, True)
    [warning] = _warnings(caplog)
    assert "(CUDA failure 100: no CUDA-capable device is detected)" in warning
    assert _answers(runtime)


def test_load_runtime_names_the_model_and_version(
    model: Path, caplog: pytest.LogCaptureFixture
) -> None:
    manifest = Manifest(runtime="onnx", artifact=model.name, signature=SIGNATURE)
    version = VersionSpec(name="v7", num_gpus=0.5)
    with caplog.at_level(logging.WARNING, logger="ray.serve"):
        runtime = load_runtime(manifest, model.parent, version, model="double")
    assert runtime.device == Device(CPU, True)
    [warning] = _warnings(caplog)
    assert warning.startswith("double/v7 asked for a GPU")
    refused = version.model_copy(update={"require_gpu": True})
    with pytest.raises(ConfigError, match=r"^double/v7 asked for a GPU"):
        load_runtime(manifest, model.parent, refused, model="double")
