"""Runtimes: load a version and predict on batches of numpy arrays.

One module per runtime (``onnx``, ``python``, ``triton``) behind :class:`Runtime`;
:func:`load_runtime` picks one from the manifest and the version's spec.
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

__all__ = [
    "Runtime",
    "guarded_predict",
    "load_runtime",
    "warm_up",
    "zero_inputs",
]


def load_runtime(
    manifest: Manifest, version_dir: Path | None, spec: VersionSpec
) -> Runtime:
    """Load the runtime the spec (or else the manifest) names.

    Imports each runtime's library only when used, so a CPU-only or remote-only
    deployment needs neither onnxruntime-gpu nor tritonclient's extras.
    """
    runtime = spec.runtime or manifest.runtime
    if runtime == "triton":
        from rayfleet.platform.runtimes.triton import TritonRuntime

        assert spec.triton is not None  # VersionSpec checks the pair
        return TritonRuntime(spec.triton, manifest.signature)
    if version_dir is None:
        raise StoreError(f"runtime {runtime!r} needs the version's files")
    if runtime == "onnx":
        from rayfleet.platform.runtimes.onnx import OnnxRuntime

        if manifest.artifact is None:
            raise StoreError("an onnx version's manifest must name its artifact")
        return OnnxRuntime(
            version_dir / manifest.artifact,
            manifest.signature,
            num_cpus=spec.num_cpus,
            use_gpu=spec.num_gpus > 0,
        )
    from rayfleet.platform.runtimes.python import PythonRuntime

    if manifest.python is None:
        raise StoreError(
            "a python version's manifest needs "
            '"python": {"callable": "module:function"}'
        )
    return PythonRuntime(manifest.python.callable, version_dir)
