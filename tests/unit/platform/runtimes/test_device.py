"""The device choice: providers asked for, what a session really runs, and the
warning or error when a version that asked for a GPU does not get one."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rayfleet.platform.errors import ConfigError
from rayfleet.platform.runtimes.device import (
    CPU,
    CUDA,
    PYTHON,
    REMOTE,
    Device,
    DeviceChoice,
    onnx_device,
    onnx_providers,
    unmanaged_device,
)

WHERE = "digits/v2"
CPU_BUILD = ["AzureExecutionProvider", CPU]
GPU_BUILD = ["TensorrtExecutionProvider", CUDA, CPU]


def test_providers_put_cuda_first_only_when_asked_for_and_offered() -> None:
    assert onnx_providers(True, GPU_BUILD) == [CUDA, CPU]
    assert onnx_providers(True, CPU_BUILD) == [CPU]
    assert onnx_providers(False, GPU_BUILD) == [CPU]
    assert onnx_providers(False, []) == [CPU]


def test_cuda_offered_and_running_is_used_without_a_word() -> None:
    choice = onnx_device(
        WHERE,
        gpu_requested=True,
        require_gpu=True,
        available=GPU_BUILD,
        running=[CUDA, CPU],
    )
    assert choice == DeviceChoice(Device(CUDA, True), None)


def test_a_cpu_version_runs_on_cpu_and_never_warns() -> None:
    for available in (CPU_BUILD, GPU_BUILD):
        choice = onnx_device(
            WHERE,
            gpu_requested=False,
            require_gpu=False,
            available=available,
            running=[CPU],
        )
        assert choice == DeviceChoice(Device(CPU, False), None)


def test_a_build_without_cuda_serves_on_cpu_and_says_install_onnxruntime_gpu() -> None:
    choice = onnx_device(
        WHERE,
        gpu_requested=True,
        require_gpu=False,
        available=CPU_BUILD,
        running=[CPU],
    )
    assert choice.device == Device(CPU, True)
    assert choice.warning == (
        "digits/v2 asked for a GPU (num_gpus > 0) but onnxruntime runs it on "
        "CPUExecutionProvider: this onnxruntime build has no CUDAExecutionProvider "
        "(it offers AzureExecutionProvider, CPUExecutionProvider): install "
        "onnxruntime-gpu in place of onnxruntime on the replicas' nodes (the `gpu` "
        "extra; both packages install the same module, so uninstall onnxruntime "
        "first). Serving on CPU; set require_gpu: true on the version to fail "
        "instead"
    )


def test_cuda_offered_but_the_session_fell_back_names_the_libraries() -> None:
    choice = onnx_device(
        WHERE,
        gpu_requested=True,
        require_gpu=False,
        available=GPU_BUILD,
        running=[CPU],
    )
    assert choice.device == Device(CPU, True)
    assert choice.warning is not None
    assert choice.warning.startswith(
        "digits/v2 asked for a GPU (num_gpus > 0) but onnxruntime runs it on "
        "CPUExecutionProvider: onnxruntime offers CUDAExecutionProvider but the "
        "session runs without it: the CUDA or cuDNN libraries it needs did not "
        "load, or no GPU is visible to the process"
    )


def test_cuda_that_raised_is_quoted() -> None:
    choice = onnx_device(
        WHERE,
        gpu_requested=True,
        require_gpu=False,
        available=GPU_BUILD,
        running=[CPU],
        cuda_error="CUDA failure 100: no CUDA-capable device is detected",
    )
    assert choice.warning is not None
    assert (
        "could not open the model with it (CUDA failure 100: no CUDA-capable "
        "device is detected): check the node's NVIDIA driver" in choice.warning
    )


@pytest.mark.parametrize(
    ("available", "reason"),
    [
        (CPU_BUILD, "install onnxruntime-gpu in place of onnxruntime"),
        (GPU_BUILD, "the CUDA or cuDNN libraries it needs did not load"),
    ],
)
def test_require_gpu_fails_with_what_to_fix(available: list[str], reason: str) -> None:
    with pytest.raises(ConfigError) as raised:
        onnx_device(
            WHERE,
            gpu_requested=True,
            require_gpu=True,
            available=available,
            running=[CPU],
        )
    message = str(raised.value)
    assert message.startswith(
        "digits/v2 asked for a GPU (num_gpus > 0) but onnxruntime runs it on "
        "CPUExecutionProvider: "
    )
    assert reason in message
    assert message.endswith(
        "The version sets require_gpu, so it does not start on CPU; drop "
        "require_gpu to let it serve on CPU meanwhile"
    )


def test_python_and_triton_report_their_own_kind_of_device() -> None:
    assert unmanaged_device(
        WHERE, "python", gpu_requested=True, require_gpu=False
    ) == Device(PYTHON, True)
    assert unmanaged_device(
        WHERE, "triton", gpu_requested=False, require_gpu=False
    ) == Device(REMOTE, False)


@pytest.mark.parametrize(
    ("runtime", "chooser"),
    [("python", "its own code"), ("triton", "the remote server")],
)
def test_python_and_triton_refuse_require_gpu(runtime: str, chooser: str) -> None:
    with pytest.raises(ConfigError) as raised:
        unmanaged_device(WHERE, runtime, gpu_requested=True, require_gpu=True)
    message = str(raised.value)
    assert message.startswith(
        f"digits/v2 sets require_gpu, which only onnx versions can keep: a "
        f"{runtime} version runs where {chooser}"
    )
    assert message.endswith("Drop require_gpu")


PROVIDERS = st.sampled_from(
    [CUDA, CPU, "AzureExecutionProvider", "TensorrtExecutionProvider"]
)


@given(
    gpu_requested=st.booleans(),
    require_gpu=st.booleans(),
    available=st.lists(PROVIDERS, unique=True),
    running=st.lists(PROVIDERS, unique=True),
    cuda_error=st.none() | st.text(max_size=20),
)
def test_a_version_warns_or_fails_exactly_when_it_asked_for_cuda_and_lacks_it(
    gpu_requested: bool,
    require_gpu: bool,
    available: list[str],
    running: list[str],
    cuda_error: str | None,
) -> None:
    missing = gpu_requested and CUDA not in running
    try:
        choice = onnx_device(
            WHERE,
            gpu_requested=gpu_requested,
            require_gpu=require_gpu,
            available=available,
            running=running,
            cuda_error=cuda_error,
        )
    except ConfigError as error:
        assert missing and require_gpu
        assert str(error).startswith(f"{WHERE} asked for a GPU")
        return
    assert not (missing and require_gpu)
    assert (choice.warning is not None) == missing
    assert choice.device.gpu_requested == gpu_requested
    # The provider reported is one the session runs (CPU when it names none).
    assert choice.device.provider in (running or [CPU])
    assert (choice.device.provider == CUDA) == (CUDA in running)


@given(gpu_requested=st.booleans(), available=st.lists(PROVIDERS, unique=True))
def test_providers_always_end_with_cpu(
    gpu_requested: bool, available: list[str]
) -> None:
    providers = onnx_providers(gpu_requested, available)
    assert providers[-1] == CPU
    assert (CUDA in providers) == (gpu_requested and CUDA in available)
