"""ONNX models on onnxruntime: CUDA when the replica has a GPU, CPU otherwise."""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import onnxruntime as ort

from rayfleet.platform.config.signature import Signature
from rayfleet.platform.errors import StoreError

__all__ = ["OnnxRuntime", "onnx_providers"]


def onnx_providers(use_gpu: bool) -> list[str]:
    """Execution providers to try, best first, among those this build has."""
    available = set(ort.get_available_providers())
    wanted = ["CUDAExecutionProvider"] if use_gpu else []
    return [p for p in wanted if p in available] + ["CPUExecutionProvider"]


class OnnxRuntime:
    """An onnxruntime session over one ``model.onnx``."""

    def __init__(
        self, path: Path, signature: Signature, *, num_cpus: float, use_gpu: bool
    ) -> None:
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # onnxruntime otherwise starts one thread per core in every replica, and
        # replicas sharing a node then fight over the cores they were not given.
        options.intra_op_num_threads = max(1, math.ceil(num_cpus))
        options.inter_op_num_threads = 1
        try:
            self.session = ort.InferenceSession(
                str(path), sess_options=options, providers=onnx_providers(use_gpu)
            )
        except Exception as error:  # onnxruntime raises its own untyped errors
            raise StoreError(f"onnxruntime cannot load {path}: {error}") from error
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

    @property
    def providers(self) -> list[str]:
        """The providers the session actually runs on."""
        return list(self.session.get_providers())

    def predict(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run the session on one batch."""
        results = self.session.run(self.output_names, dict(inputs))
        return dict(zip(self.output_names, results, strict=True))
