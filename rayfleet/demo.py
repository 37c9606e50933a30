"""The demo models: three versions of a digits classifier, built offline.

scikit-learn bundles the 8x8 ``digits`` images, so nothing is downloaded. Each
version is exported to ONNX with skl2onnx and pushed to a store with a
``reference.parquet`` of its held-out inputs and predictions:

- ``v1``: logistic regression, the stable version.
- ``v2``: a small neural network, at least as accurate: a good canary.
- ``v3``: a depth-3 decision tree, deliberately much worse: a bad canary.

Needs the ``dev`` extra (scikit-learn, skl2onnx).
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from rayfleet.platform.signature import Signature, TensorSpec
from rayfleet.platform.store import MANIFEST, REFERENCE, Manifest, ModelStore

__all__ = ["DIGITS_SIGNATURE", "DemoVersion", "build_demo_store", "digits_split"]

DIGITS_SIGNATURE = Signature(
    inputs=(TensorSpec(name="input", datatype="FP32", shape=(-1, 64)),),
    outputs=(
        TensorSpec(name="label", datatype="INT64", shape=(-1,)),
        TensorSpec(name="probabilities", datatype="FP32", shape=(-1, 10)),
    ),
)


@dataclass(frozen=True)
class DemoVersion:
    """A built demo version and its accuracy on the held-out split."""

    name: str
    description: str
    accuracy: float


def digits_split() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(x_train, x_test, y_train, y_test)``: a fixed split of sklearn's digits."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = digits.data.astype(np.float32)
    y = digits.target.astype(np.int64)
    split: Any = train_test_split(x, y, test_size=0.3, random_state=0, stratify=y)
    return split[0], split[1], split[2], split[3]


def _estimators() -> dict[str, tuple[str, Any]]:
    from sklearn.linear_model import LogisticRegression
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.tree import DecisionTreeClassifier

    return {
        "v1": ("logistic regression", LogisticRegression(max_iter=2000)),
        "v2": (
            "scaled MLP, one hidden layer of 64",
            make_pipeline(
                StandardScaler(),
                MLPClassifier(hidden_layer_sizes=(64,), max_iter=600, random_state=0),
            ),
        ),
        "v3": (
            "depth-3 decision tree (deliberately bad)",
            DecisionTreeClassifier(max_depth=3, random_state=0),
        ),
    }


def _to_onnx(estimator: Any) -> bytes:
    from skl2onnx import to_onnx
    from skl2onnx.common.data_types import FloatTensorType

    onnx_model = to_onnx(
        estimator,
        initial_types=[("input", FloatTensorType([None, 64]))],
        options={id(estimator): {"zipmap": False}},
        target_opset=17,
    )
    payload: bytes = onnx_model.SerializeToString()
    return payload


def _reference(x: np.ndarray, y: np.ndarray, estimator: Any) -> pa.Table:
    probabilities = estimator.predict_proba(x).astype(np.float32)
    columns = {f"pixel_{i}": x[:, i] for i in range(x.shape[1])}
    columns["target"] = y
    columns["prediction"] = probabilities.argmax(axis=1).astype(np.int64)
    columns["confidence"] = probabilities.max(axis=1)
    return pa.table(columns)


def build_demo_store(root: str, *, overwrite: bool = True) -> list[DemoVersion]:
    """Train, export and push ``digits`` v1, v2 and v3 into the store at ``root``."""
    x_train, x_test, y_train, y_test = digits_split()
    store = ModelStore(root)
    built = []
    for name, (description, estimator) in _estimators().items():
        estimator.fit(x_train, y_train)
        accuracy = float((estimator.predict(x_test) == y_test).mean())
        manifest = Manifest(
            runtime="onnx",
            artifact="model.onnx",
            signature=DIGITS_SIGNATURE,
            labels=tuple(str(d) for d in range(10)),
            description=f"digits {description}; held-out accuracy {accuracy:.3f}",
        )
        with tempfile.TemporaryDirectory() as scratch:
            folder = Path(scratch) / name
            folder.mkdir()
            (folder / "model.onnx").write_bytes(_to_onnx(estimator))
            (folder / MANIFEST).write_text(manifest.to_json())
            pq.write_table(_reference(x_test, y_test, estimator), folder / REFERENCE)
            store.push(folder, "digits", name, overwrite=overwrite)
        built.append(DemoVersion(name, description, accuracy))
    return built
