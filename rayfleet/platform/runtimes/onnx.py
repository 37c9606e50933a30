"""ONNX models on onnxruntime: CUDA when the version asks for a GPU and the
session can run it, CPU otherwise (:mod:`.device` decides and says why)."""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import onnxruntime as ort

from rayfleet.platform.config.signature import Signature
from rayfleet.platform.errors import StoreError
from rayfleet.platform.runtimes.device import (
    CPU,
    CUDA,
    Device,
    onnx_device,
    onnx_providers,
)

__all__ = ["OnnxRuntime"]

# Serve's logger: in a replica, the warning lands in the replica's own log.
logger = logging.getLogger("ray.serve")


def _open(
    path: Path, options: ort.SessionOptions, providers: list[str]
) -> ort.InferenceSession:
    try:
        return ort.InferenceSession(
            str(path), sess_options=options, providers=providers
        )
    except Exception as error:  # onnxruntime raises its own untyped errors
        raise StoreError(f"onnxruntime cannot load {path}: {error}") from error


class OnnxRuntime:
    """An onnxruntime session over one ``model.onnx``, named ``where``
    (model/version) in what it logs and raises."""

    def __init__(
        self,
        path: Path,
        signature: Signature,
        *,
        where: str,
        num_cpus: float,
        gpu_requested: bool,
        require_gpu: bool,
    ) -> None:
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # onnxruntime otherwise starts one thread per core in every replica, and
        # replicas sharing a node then fight over the cores they were not given.
        options.intra_op_num_threads = max(1, math.ceil(num_cpus))
        options.inter_op_num_threads = 1
        available = ort.get_available_providers()
        providers = onnx_providers(gpu_requested, available)
        cuda_error = None
        try:
            self.session = _open(path, options, providers)
        except StoreError as error:
            if CUDA not in providers:
                raise
            # Some onnxruntime-gpu builds raise when CUDA cannot start, where
            # others fall back to CPU by themselves: fall back here alike.
            cuda_error = str(error.__cause__)
            self.session = _open(path, options, [CPU])
        choice = onnx_device(
            where,
            gpu_requested=gpu_requested,
            require_gpu=require_gpu,
            available=available,
            running=self.session.get_providers(),
            cuda_error=cuda_error,
        )
        if choice.warning is not None:
            logger.warning("%s", choice.warning)
        self.device: Device = choice.device
        session_inputs = {node.name for node in self.session.get_inputs()}
        declared = {spec.name for spec in signature.inputs}
        if session_inputs != declared:
            raise StoreError(
                f"{path}: the manifest declares inputs {sorted(declared)} but the "
                f"graph takes {sorted(session_inputs)}"
            )
        self.output_names = [spec.name for spec in signature.outputs]
        missing = set(self.output_names) - {o.name for o in self.session.get_outputs()}
        if missing:
            raise StoreError(f"{path}: the graph has no output(s) {sorted(missing)}")

    def predict(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run the session on one batch."""
        results = self.session.run(self.output_names, dict(inputs))
        return dict(zip(self.output_names, results, strict=True))
