"""load_version: fetch, load and warm a version, the one path replicas and the
router's process share."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from rayfleet.platform.config.signature import Signature, TensorSpec
from rayfleet.platform.config.spec import VersionSpec
from rayfleet.platform.config.store import MANIFEST, Manifest, ModelStore, PythonEntry
from rayfleet.platform.errors import ConfigError
from rayfleet.platform.runtimes.device import PYTHON, Device
from rayfleet.platform.serving.loading import load_version

# The predictor logs every batch size it is called with beside its own files.
PREDICT = """
import numpy as np
from pathlib import Path

def load(version_dir):
    log = Path(version_dir) / "calls.txt"
    def predict(inputs):
        rows = len(inputs["x"])
        with log.open("a") as out:
            out.write(f"{rows}\\n")
        return {"y": inputs["x"].sum(axis=1)}
    return predict
"""

SIGNATURE = Signature(
    inputs=(TensorSpec(name="x", datatype="FP32", shape=(-1, 3)),),
    outputs=(TensorSpec(name="y", datatype="FP32", shape=(-1,)),),
)


def _store(root: Path) -> tuple[ModelStore, Manifest, Path]:
    manifest = Manifest(
        runtime="python",
        signature=SIGNATURE,
        python=PythonEntry(callable="loading_predict:load"),
    )
    folder = root / "summer" / "v1"
    folder.mkdir(parents=True)
    (folder / MANIFEST).write_text(manifest.to_json())
    (folder / "loading_predict.py").write_text(PREDICT)
    return ModelStore(str(root)), manifest, folder


def test_a_loaded_version_is_warm_at_its_smallest_and_largest_batch(
    tmp_path: Path,
) -> None:
    store, manifest, folder = _store(tmp_path)
    version = VersionSpec.model_validate(
        {"name": "v1", "batching": {"max_batch_size": 8}}
    )
    loaded = load_version(store, "summer", version, manifest)
    assert (folder / "calls.txt").read_text().split() == ["1", "8"]
    assert loaded.warm_s >= 0
    outputs = loaded.runtime.predict({"x": np.ones((2, 3), dtype=np.float32)})
    assert outputs["y"].tolist() == [3.0, 3.0]


def test_a_python_version_reports_its_own_kind_of_device(tmp_path: Path) -> None:
    store, manifest, _ = _store(tmp_path)
    version = VersionSpec(name="v1", num_gpus=1)
    loaded = load_version(store, "summer", version, manifest)
    assert loaded.runtime.device == Device(PYTHON, gpu_requested=True)


def test_require_gpu_on_a_python_version_is_refused_at_load(
    tmp_path: Path,
) -> None:
    store, manifest, folder = _store(tmp_path)
    # The spec cannot tell: the runtime comes from the manifest.
    version = VersionSpec(name="v1", num_gpus=1, require_gpu=True)
    with pytest.raises(ConfigError) as raised:
        load_version(store, "summer", version, manifest)
    assert str(raised.value).startswith(
        "summer/v1 sets require_gpu, which only onnx versions can keep"
    )
    assert not (folder / "calls.txt").exists()
