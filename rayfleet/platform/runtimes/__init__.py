"""Runtimes: load a version and predict on batches of numpy arrays.

One module per runtime (``onnx``, ``python``, ``triton``) behind :class:`Runtime`;
:func:`load_runtime` picks one from the manifest and the version's spec, and
``device`` decides what each runs on (:class:`Device`, in every replica's report).
"""

from __future__ import annotations

from pathlib import Path

from rayfleet.platform.config.spec import VersionSpec
from rayfleet.platform.config.store import Manifest
from rayfleet.platform.errors import StoreError
from rayfleet.platform.runtimes.base import (
    Runtime,
    guarded_predict,
    warm_up,
    zero_inputs,
)
from rayfleet.platform.runtimes.device import Device, unmanaged_device

__all__ = [
    "Device",
    "Runtime",
    "guarded_predict",
    "load_runtime",
    "warm_up",
    "zero_inputs",
]


def load_runtime(
    manifest: Manifest, version_dir: Path | None, spec: VersionSpec, *, model: str
) -> Runtime:
    """Load the runtime the spec (or else the manifest) names, for version
    ``spec`` of ``model``, on the device :mod:`.device` picks.

    Imports each runtime's library only when used, so a CPU-only or remote-only
    deployment needs neither onnxruntime-gpu nor tritonclient's extras.
    """
    runtime = spec.runtime or manifest.runtime
    where = f"{model}/{spec.name}"
    gpu_requested = spec.num_gpus > 0
    if runtime == "triton":
        from rayfleet.platform.runtimes.triton import TritonRuntime

        assert spec.triton is not None  # VersionSpec checks the pair
        device = unmanaged_device(
            where, runtime, gpu_requested=gpu_requested, require_gpu=spec.require_gpu
        )
        return TritonRuntime(spec.triton, manifest.signature, device=device)
    if version_dir is None:
        raise StoreError(f"runtime {runtime!r} needs the version's files")
    if runtime == "onnx":
        from rayfleet.platform.runtimes.onnx import OnnxRuntime

        if manifest.artifact is None:
            raise StoreError("an onnx version's manifest must name its artifact")
        return OnnxRuntime(
            version_dir / manifest.artifact,
            manifest.signature,
            where=where,
            num_cpus=spec.num_cpus,
            gpu_requested=gpu_requested,
            require_gpu=spec.require_gpu,
        )
    from rayfleet.platform.runtimes.python import PythonRuntime

    if manifest.python is None:
        raise StoreError(
            "a python version's manifest needs "
            '"python": {"callable": "module:function"}'
        )
    # Checked before the version's own code runs: a refused version loads nothing.
    device = unmanaged_device(
        where, runtime, gpu_requested=gpu_requested, require_gpu=spec.require_gpu
    )
    return PythonRuntime(manifest.python.callable, version_dir, device=device)
