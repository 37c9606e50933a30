"""A model store on disk for the admin app's tests: ``digits`` in v1 and v2."""

from __future__ import annotations

from pathlib import Path

import pytest

from rayfleet.platform.config.signature import Signature, TensorSpec
from rayfleet.platform.config.store import MANIFEST, Manifest, ModelStore, PythonEntry

SIGNATURE = Signature(
    inputs=(TensorSpec(name="input", datatype="FP32", shape=(-1, 4)),),
    outputs=(TensorSpec(name="score", datatype="FP32", shape=(-1,)),),
)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> ModelStore:
    root = tmp_path_factory.mktemp("store")
    manifest = Manifest(
        runtime="python", signature=SIGNATURE, python=PythonEntry(callable="m:load")
    )
    for version in ("v1", "v2"):
        folder = Path(root, "digits", version)
        folder.mkdir(parents=True)
        (folder / MANIFEST).write_text(manifest.to_json())
    return ModelStore(str(root))
