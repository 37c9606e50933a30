"""Which device a version runs on: what it asked for, what is there, what it got.

A version asks for a GPU with ``num_gpus > 0``. The onnx runtime then asks
onnxruntime for CUDA first, when this build of onnxruntime offers it, and reads
back what the session really runs: onnxruntime falls back to CPU by itself when
CUDA cannot start (its libraries missing or of the wrong version, no GPU visible),
and says so only in its own log. A version that asked for a GPU and runs on CPU
gets one warning saying why and keeps serving, slower, unless it sets
``require_gpu``: then loading fails with what to fix, and the replica never starts.

The python and triton runtimes do not pick a device here. A python version's own
code chooses where it runs (Ray has reserved the GPUs it asked for, and nothing
here can see whether the code uses them), and a Triton server places its models
itself. They report ``python`` and ``remote``, and refuse ``require_gpu``, a
promise rayfleet could not check for them.

Everything here is pure: the runtimes call it with what onnxruntime says.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from rayfleet.platform.errors import ConfigError

__all__ = [
    "CPU",
    "CUDA",
    "PYTHON",
    "REMOTE",
    "Device",
    "DeviceChoice",
    "onnx_device",
    "onnx_providers",
    "unmanaged_device",
]

CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"
# What runtimes that do not pick a device here report instead of a provider.
PYTHON = "python"
REMOTE = "remote"


@dataclass(frozen=True)
class Device:
    """What a loaded version runs on (``provider``: an onnxruntime execution
    provider, or :data:`PYTHON` / :data:`REMOTE`), and whether it asked for a GPU."""

    provider: str
    gpu_requested: bool


@dataclass(frozen=True)
class DeviceChoice:
    """A session's device, and the one warning to log when it is not the one
    asked for (``None`` when it is)."""

    device: Device
    warning: str | None


def onnx_providers(gpu_requested: bool, available: Sequence[str]) -> list[str]:
    """The execution providers to ask a session for, best first: CUDA when the
    version asked for a GPU and this onnxruntime build offers it (``available``),
    then CPU, which every build has."""
    cuda = [CUDA] if gpu_requested and CUDA in available else []
    return [*cuda, CPU]


def _why_not_cuda(available: Sequence[str], cuda_error: str | None) -> str:
    if CUDA not in available:
        return (
            f"this onnxruntime build has no {CUDA} (it offers "
            f"{', '.join(available) or 'nothing'}): install onnxruntime-gpu in "
            "place of onnxruntime on the replicas' nodes (the `gpu` extra; both "
            "packages install the same module, so uninstall onnxruntime first)"
        )
    if cuda_error is not None:
        return (
            f"onnxruntime offers {CUDA} but could not open the model with it "
            f"({cuda_error}): check the node's NVIDIA driver and the CUDA and cuDNN "
            "versions this onnxruntime-gpu needs"
        )
    return (
        f"onnxruntime offers {CUDA} but the session runs without it: the CUDA or "
        "cuDNN libraries it needs did not load, or no GPU is visible to the "
        "process; onnxruntime's own log says which. Install the CUDA and cuDNN "
        "versions this onnxruntime-gpu needs on the node"
    )


def onnx_device(
    where: str,
    *,
    gpu_requested: bool,
    require_gpu: bool,
    available: Sequence[str],
    running: Sequence[str],
    cuda_error: str | None = None,
) -> DeviceChoice:
    """The device an onnxruntime session of ``where`` (model/version) runs on.

    ``available`` is what the onnxruntime build offers, ``running`` what the
    session reports it runs (``get_providers()``, best first), and ``cuda_error``
    why opening the model with CUDA raised, when it did and the session is the
    CPU one opened after. A version that asked for a GPU and does not run CUDA
    gets a warning naming what it asked, what is there and why; with
    ``require_gpu`` it raises :class:`ConfigError` with the same words instead.
    """
    provider = CUDA if CUDA in running else (running[0] if running else CPU)
    device = Device(provider, gpu_requested)
    if not gpu_requested or provider == CUDA:
        return DeviceChoice(device, None)
    problem = (
        f"{where} asked for a GPU (num_gpus > 0) but onnxruntime runs it on "
        f"{provider}: {_why_not_cuda(available, cuda_error)}"
    )
    if require_gpu:
        raise ConfigError(
            f"{problem}. The version sets require_gpu, so it does not start on "
            "CPU; drop require_gpu to let it serve on CPU meanwhile"
        )
    return DeviceChoice(
        device,
        f"{problem}. Serving on CPU; set require_gpu: true on the version to "
        "fail instead",
    )


def unmanaged_device(
    where: str, runtime: str, *, gpu_requested: bool, require_gpu: bool
) -> Device:
    """The device of a ``python`` or ``triton`` version, which picks its own.

    Raises :class:`ConfigError` when the version sets ``require_gpu``: nothing
    here can see whether its code (or the remote server) uses a GPU.
    """
    python = runtime == "python"
    if require_gpu:
        chooser = (
            "its own code, which can check the GPU Ray reserved (num_gpus)"
            if python
            else "the remote server's own model configuration"
        )
        raise ConfigError(
            f"{where} sets require_gpu, which only onnx versions can keep: a "
            f"{runtime} version runs where {chooser} puts it, out of rayfleet's "
            "sight. Drop require_gpu"
        )
    return Device(PYTHON if python else REMOTE, gpu_requested)
