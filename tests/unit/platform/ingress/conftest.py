"""The admin app's test fixtures: a model store on disk (``digits`` in v1 and v2),
the admin app over it, and a test client."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from rayfleet.platform.config.signature import Signature, TensorSpec
from rayfleet.platform.config.store import MANIFEST, Manifest, ModelStore, PythonEntry
from tests.unit.platform.ingress.test_admin import TOKEN, Admin

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


@pytest.fixture
def admin(store: ModelStore) -> Admin:
    return Admin(store, TOKEN)


@pytest.fixture
def client(admin: Admin) -> Iterator[TestClient]:
    with TestClient(admin.app) as test_client:
        yield test_client
