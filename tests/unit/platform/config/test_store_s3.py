"""The model store on S3: moto's S3 server on loopback stands in for AWS.

The store URI carries pyarrow's S3 options as query parameters
(``s3://bucket/prefix?endpoint_override=...``), the same way a user points the
store at MinIO or another S3-compatible service.
"""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pyarrow.fs as pafs
import pytest
import yaml

from rayfleet.cli.check import RAYFLEET_IMPORT_PATH, check_file
from rayfleet.cli.demo import build_demo_store
from rayfleet.cli.main import main
from rayfleet.platform.config.store import MANIFEST, REFERENCE, ModelStore
from rayfleet.platform.errors import StoreError

moto_server = pytest.importorskip("moto.server")

pytestmark = pytest.mark.timeout(120)

# Dummy credentials, and no lookups of the machine's own AWS configuration or of
# an instance metadata service: nothing here may reach a real AWS account.
AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
    "AWS_CONFIG_FILE": "/nonexistent",
    "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent",
}


@pytest.fixture(scope="module")
def demo_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The digits demo versions in a local store: the folders to push."""
    root = tmp_path_factory.mktemp("local-store")
    build_demo_store(str(root))
    return root


@pytest.fixture
def endpoint(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """``http://127.0.0.1:PORT`` of an S3 server that lives for one test."""
    for name, value in AWS_ENV.items():
        monkeypatch.setenv(name, value)
    server = moto_server.ThreadedMotoServer(
        ip_address="127.0.0.1", port=0, verbose=False
    )
    server.start()
    try:
        host, port = server.get_host_and_port()
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@pytest.fixture
def store_uri(endpoint: str) -> str:
    """A store root on a new, empty bucket."""
    bucket = f"models-{uuid.uuid4().hex[:12]}"
    admin = pafs.S3FileSystem(
        endpoint_override=endpoint, region="us-east-1", allow_bucket_creation=True
    )
    admin.create_dir(bucket)
    return f"s3://{bucket}/prod?endpoint_override={endpoint}&region=us-east-1"


def test_push_list_read_and_fetch(demo_store: Path, store_uri: str) -> None:
    store = ModelStore(store_uri)
    assert store.models() == []
    source = demo_store / "digits" / "v1"
    store.push(source, "digits", "v1")

    assert store.models() == ["digits"]
    assert store.versions("digits") == ["v1"]
    manifest = store.manifest("digits", "v1")
    assert manifest == ModelStore(str(demo_store)).manifest("digits", "v1")
    reference = store.reference("digits", "v1")
    assert reference is not None
    assert reference.num_rows > 0

    local = store.fetch("digits", "v1")
    try:
        assert sorted(p.name for p in local.iterdir()) == sorted(
            p.name for p in source.iterdir()
        )
        for name in (MANIFEST, "model.onnx", REFERENCE):
            assert (local / name).read_bytes() == (source / name).read_bytes()
    finally:
        shutil.rmtree(local)


def test_push_keeps_an_existing_version(demo_store: Path, store_uri: str) -> None:
    store = ModelStore(store_uri)
    store.push(demo_store / "digits" / "v1", "digits", "v1")
    with pytest.raises(StoreError, match="already exists"):
        store.push(demo_store / "digits" / "v2", "digits", "v1")
    store.push(demo_store / "digits" / "v2", "digits", "v1", overwrite=True)
    assert store.manifest("digits", "v1").description.startswith("digits scaled MLP")


def test_missing_version_is_named(store_uri: str) -> None:
    with pytest.raises(StoreError, match="model 'digits' has no version 'v9'"):
        ModelStore(store_uri).manifest("digits", "v9")


def test_cli_push_and_ls(
    demo_store: Path, store_uri: str, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = str(demo_store / "digits" / "v3")
    push = ["models", "push", folder, "--store", store_uri]
    assert main([*push, "--model", "digits", "--version", "v3"]) == 0
    assert main(["models", "ls", "--store", store_uri]) == 0
    assert "digits\tv3\tonnx\tdigits depth-3 decision tree" in capsys.readouterr().out


def test_check_reads_versions_from_the_store(
    demo_store: Path, store_uri: str, tmp_path: Path
) -> None:
    ModelStore(store_uri).push(demo_store / "digits" / "v1", "digits", "v1")
    args = {
        "store": store_uri,
        "models": [{"name": "digits", "versions": [{"name": "v1"}, {"name": "v2"}]}],
    }
    config = tmp_path / "s3.yaml"
    config.write_text(
        yaml.safe_dump(
            {"applications": [{"import_path": RAYFLEET_IMPORT_PATH, "args": args}]}
        )
    )
    (problem,) = check_file(str(config), store_check=True).problems
    assert "applications.0.args.models.0.versions.1: model 'digits' has no " in problem
    assert "versions.0" not in problem


def test_version_uri_keeps_the_query_last(store_uri: str) -> None:
    path, query = store_uri.split("?")
    assert ModelStore(store_uri).version_uri("m", "v1") == f"{path}/m/v1?{query}"


def test_history_appends_and_reads_back_on_s3(store_uri: str) -> None:
    store = ModelStore(store_uri)
    assert store.read_history("app/digits", 10) == []
    store.write_state("app/digits", {"stable": "v1"})
    for n in range(5):
        store.append_history("app/digits", {"n": n})
    # A second Validator's store on the same bucket, and a restart's new one.
    ModelStore(store_uri).append_history("app/digits", {"n": 5})
    again = ModelStore(store_uri)
    assert again.read_history("app/digits", 100) == [{"n": n} for n in range(6)]
    assert again.read_history("app/digits", 2) == [{"n": 4}, {"n": 5}]
    assert again.read_state("app/digits") == {"stable": "v1"}
    assert again.models() == []

    # One object per entry, written in place: no scratch objects left behind.
    fs, root = pafs.FileSystem.from_uri(store_uri)
    infos = fs.get_file_info(pafs.FileSelector(f"{root}/_history/app/digits"))
    names = sorted(info.base_name for info in infos)
    assert len(names) == 6
    assert all(name.endswith(".json") and "tmp" not in name for name in names)


def test_a_long_history_reads_back_in_order_on_s3(store_uri: str) -> None:
    # More entries than are read at once: order and limit hold across the reads.
    store = ModelStore(store_uri)
    for n in range(40):
        store.append_history("app/digits", {"n": n})
    assert store.read_history("app/digits", 1000) == [{"n": n} for n in range(40)]
    assert store.read_history("app/digits", 17) == [{"n": n} for n in range(23, 40)]
