"""The demo models, built offline: a digits classifier in three versions, and an
image model.

scikit-learn bundles the 8x8 ``digits`` images, so nothing is downloaded. Each
version is exported to ONNX with skl2onnx and pushed to a store with a
``reference.parquet`` of its held-out inputs and predictions:

- ``v1``: logistic regression, the stable version.
- ``v2``: a small neural network, at least as accurate: a good canary.
- ``v3``: a depth-3 decision tree, deliberately much worse: a bad canary.

``image/v1`` is a small CNN over ``[-1, 3, 224, 224]`` images, written with
``onnx.helper`` and given seeded random weights: not a classifier anyone should
trust, but a model whose inference costs milliseconds, with image-sized requests,
for the benchmarks of payloads and batching.

Needs the ``dev`` extra (scikit-learn, skl2onnx, onnx).
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from rayfleet.platform.config.signature import Signature, TensorSpec
from rayfleet.platform.config.store import MANIFEST, REFERENCE, Manifest, ModelStore
from rayfleet.platform.validation.observation import batch_predictions, summarize_batch

__all__ = [
    "DIGITS_SIGNATURE",
    "IMAGE_SIGNATURE",
    "DemoVersion",
    "build_demo_store",
    "build_image_model",
    "digits_split",
    "image_batch",
    "image_model_onnx",
    "push_digits_version",
]

DIGITS_SIGNATURE = Signature(
    inputs=(TensorSpec(name="input", datatype="FP32", shape=(-1, 64)),),
    outputs=(
        TensorSpec(name="label", datatype="INT64", shape=(-1,)),
        TensorSpec(name="probabilities", datatype="FP32", shape=(-1, 10)),
    ),
)

IMAGE_SIGNATURE = Signature(
    inputs=(TensorSpec(name="image", datatype="FP32", shape=(-1, 3, 224, 224)),),
    outputs=(
        TensorSpec(name="probabilities", datatype="FP32", shape=(-1, 10)),
        TensorSpec(name="label", datatype="INT64", shape=(-1,)),
    ),
)

# (output channels, kernel, stride) of each convolution, each followed by a ReLU:
# about 80 M multiply-adds per image, a few milliseconds on one CPU core.
_IMAGE_LAYERS = ((16, 3, 2), (32, 3, 2), (64, 3, 2), (64, 3, 1), (128, 3, 2))
# The reference's feature columns: what the router's observations record for an
# image (rayfleet.platform.validation.observation), in that order.
_SUMMARY_NAMES = ("mean", "std", "min", "max")


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


def image_model_onnx(seed: int = 0) -> bytes:
    """The image model as ONNX bytes: strided convolutions with ReLU, global
    average pooling, a dense layer over standardized features, softmax, argmax.

    Weights are He-initialised from a numpy generator seeded with ``seed``. The
    dense layer standardizes the pooled features with their mean and spread over
    64 synthetic calibration images, measured here with onnxruntime, so that the
    predicted class follows what differs between images rather than what they
    share. Builds are identical on one machine; across onnxruntime builds the
    calibrated bias may differ in its last bits.
    """
    import onnxruntime as ort

    rng = np.random.default_rng(seed)
    convolutions = []
    channels = 3
    for out, kernel, _ in _IMAGE_LAYERS:
        fan_in = channels * kernel * kernel
        convolutions.append(
            rng.normal(0, np.sqrt(2 / fan_in), (out, channels, kernel, kernel))
        )
        channels = out
    dense = rng.normal(0, 3 / np.sqrt(channels), (channels, 10))
    probe = _image_graph(convolutions, dense, np.zeros(10), probe=True)
    session = ort.InferenceSession(probe, providers=["CPUExecutionProvider"])
    (features,) = session.run(["features"], {"image": image_batch(64, seed + 1)})
    mean, spread = features.mean(axis=0), features.std(axis=0) + 1e-6
    scaled = dense / spread[:, None]
    return _image_graph(convolutions, scaled, -(mean / spread) @ dense)


def _image_graph(
    convolutions: list[np.ndarray],
    dense: np.ndarray,
    bias: np.ndarray,
    *,
    probe: bool = False,
) -> bytes:
    """The serialized graph; ``probe`` adds the pooled features as an output."""
    from onnx import TensorProto, checker, helper, numpy_helper

    nodes, weights = [], []
    current = "image"
    for index, (w, (_, kernel, stride)) in enumerate(
        zip(convolutions, _IMAGE_LAYERS, strict=True)
    ):
        weights += [
            numpy_helper.from_array(w.astype(np.float32), f"conv{index}.w"),
            numpy_helper.from_array(np.zeros(len(w), np.float32), f"conv{index}.b"),
        ]
        nodes += [
            helper.make_node(
                "Conv",
                [current, f"conv{index}.w", f"conv{index}.b"],
                [f"conv{index}"],
                kernel_shape=[kernel, kernel],
                strides=[stride, stride],
                pads=[kernel // 2] * 4,
            ),
            helper.make_node("Relu", [f"conv{index}"], [f"relu{index}"]),
        ]
        current = f"relu{index}"
    weights += [
        numpy_helper.from_array(dense.astype(np.float32), "dense.w"),
        numpy_helper.from_array(bias.astype(np.float32), "dense.b"),
    ]
    nodes += [
        helper.make_node("GlobalAveragePool", [current], ["pooled"]),
        helper.make_node("Flatten", ["pooled"], ["features"]),
        helper.make_node("Gemm", ["features", "dense.w", "dense.b"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1),
        helper.make_node("ArgMax", ["logits"], ["label"], axis=1, keepdims=0),
    ]
    image = helper.make_tensor_value_info(
        "image", TensorProto.FLOAT, [None, 3, 224, 224]
    )
    outputs = [
        helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, [None, 10]),
        helper.make_tensor_value_info("label", TensorProto.INT64, [None]),
    ]
    if probe:
        outputs.append(
            helper.make_tensor_value_info(
                "features", TensorProto.FLOAT, [None, dense.shape[0]]
            )
        )
    graph = helper.make_graph(nodes, "image", [image], outputs, initializer=weights)
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", 17)],
        producer_name="rayfleet.cli.demo",
    )
    # onnxruntime refuses models of an IR version newer than it knows.
    model.ir_version = 8
    checker.check_model(model)
    payload: bytes = model.SerializeToString()
    return payload


def image_batch(count: int, seed: int = 0) -> np.ndarray:
    """``count`` synthetic images, FP32 ``[count, 3, 224, 224]`` in ``[0, 1]``.

    Smooth colour blobs (a random 7x7 image scaled up 32 times) plus pixel noise,
    so images differ in their means, spreads and predictions.
    """
    rng = np.random.default_rng(seed)
    coarse = rng.uniform(0, 1, (count, 3, 7, 7))
    smooth = coarse.repeat(32, axis=2).repeat(32, axis=3)
    noise = rng.standard_normal((count, 3, 224, 224), dtype=np.float32) * 0.1
    images: np.ndarray = np.clip(smooth.astype(np.float32) + noise, 0, 1)
    return images


def _image_reference(model: bytes, images: np.ndarray) -> pa.Table:
    """Per-image summaries, named as the router's observations summarize an image
    (mean, std, min, max), with the model's predictions on them."""
    import onnxruntime as ort

    session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    probabilities, label = session.run(["probabilities", "label"], {"image": images})
    features = summarize_batch({"image": images})
    prediction, confidence = batch_predictions(
        {"label": label, "probabilities": probabilities}
    )
    # FP32 images always summarize, and an INT64 label always gives predictions.
    assert features is not None and prediction is not None
    columns: dict[str, Any] = {
        name: features[:, index] for index, name in enumerate(_SUMMARY_NAMES)
    }
    columns["prediction"] = prediction.astype(np.int64)
    columns["confidence"] = confidence
    return pa.table(columns)


def build_image_model(
    store: ModelStore, version: str = "v1", *, overwrite: bool = True
) -> str:
    """Build the image model with a ``reference.parquet`` of 64 synthetic images,
    push it as ``image/{version}`` and return its URI."""
    model = image_model_onnx()
    manifest = Manifest(
        runtime="onnx",
        artifact="model.onnx",
        signature=IMAGE_SIGNATURE,
        labels=tuple(f"class_{k}" for k in range(10)),
        description=(
            "image: 3 strided convolutions (8-16-32 channels), seeded random "
            "weights; a cost model, not a classifier"
        ),
    )
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch) / version
        folder.mkdir()
        (folder / "model.onnx").write_bytes(model)
        (folder / MANIFEST).write_text(manifest.to_json())
        pq.write_table(_image_reference(model, image_batch(64)), folder / REFERENCE)
        return store.push(folder, "image", version, overwrite=overwrite)


def build_demo_store(root: str, *, overwrite: bool = True) -> list[DemoVersion]:
    """Train, export and push ``digits`` v1, v2 and v3 into the store at ``root``,
    and build ``image/v1`` (:func:`build_image_model`); returns the digits
    versions."""
    x_train, _, y_train, _ = digits_split()
    store = ModelStore(root)
    built = []
    for name, (description, estimator) in _estimators().items():
        estimator.fit(x_train, y_train)
        built.append(
            push_digits_version(
                store, "digits", name, estimator, description, overwrite=overwrite
            )
        )
    build_image_model(store, overwrite=overwrite)
    return built


def push_digits_version(
    store: ModelStore,
    model: str,
    name: str,
    estimator: Any,
    description: str,
    *,
    overwrite: bool = True,
) -> DemoVersion:
    """Push a fitted digits classifier into ``store`` as ``model``/``name``: its
    ONNX export, a manifest with the digits signature and labels, and a
    ``reference.parquet`` of the held-out rows; scored on those rows."""
    _, x_test, _, y_test = digits_split()
    accuracy = float((estimator.predict(x_test) == y_test).mean())
    manifest = Manifest(
        runtime="onnx",
        artifact="model.onnx",
        signature=DIGITS_SIGNATURE,
        labels=tuple(str(d) for d in range(10)),
        description=f"{model} {description}; held-out accuracy {accuracy:.3f}",
    )
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch) / name
        folder.mkdir()
        (folder / "model.onnx").write_bytes(_to_onnx(estimator))
        (folder / MANIFEST).write_text(manifest.to_json())
        pq.write_table(_reference(x_test, y_test, estimator), folder / REFERENCE)
        store.push(folder, model, name, overwrite=overwrite)
    return DemoVersion(name, description, accuracy)
