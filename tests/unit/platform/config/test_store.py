from __future__ import annotations

import json
import logging
import re
import threading
from pathlib import Path
from typing import Any

import pytest

from rayfleet.platform.config import store as store_module
from rayfleet.platform.config.location import Location
from rayfleet.platform.config.signature import Signature, TensorSpec
from rayfleet.platform.config.store import (
    HISTORY_READERS,
    MANIFEST,
    Manifest,
    ModelStore,
)
from rayfleet.platform.errors import StoreError

SIGNATURE = Signature(
    inputs=(TensorSpec(name="x", datatype="FP32", shape=(-1, 2)),),
    outputs=(TensorSpec(name="y", datatype="FP32", shape=(-1, 2)),),
)


def version_folder(parent: Path, name: str = "v1") -> Path:
    folder = parent / name
    folder.mkdir(parents=True)
    (folder / "model.onnx").write_bytes(b"onnx bytes")
    manifest = Manifest(runtime="onnx", artifact="model.onnx", signature=SIGNATURE)
    (folder / MANIFEST).write_text(manifest.to_json())
    return folder


def test_push_ls_and_read_back(tmp_path: Path) -> None:
    store = ModelStore(str(tmp_path / "store"))
    uri = store.push(version_folder(tmp_path / "src"), "m", "v1")
    assert uri == f"{tmp_path}/store/m/v1"
    assert store.models() == ["m"]
    assert store.versions("m") == ["v1"]
    manifest = store.manifest("m", "v1")
    assert manifest.signature == SIGNATURE
    assert (store.fetch("m", "v1") / "model.onnx").read_bytes() == b"onnx bytes"
    assert store.reference("m", "v1") is None


def test_push_refuses_to_overwrite_unless_asked(tmp_path: Path) -> None:
    store = ModelStore(str(tmp_path / "store"))
    folder = version_folder(tmp_path / "src")
    store.push(folder, "m", "v1")
    with pytest.raises(StoreError, match="already exists"):
        store.push(folder, "m", "v1")
    (folder / "model.onnx").write_bytes(b"new")
    store.push(folder, "m", "v1", overwrite=True)
    assert (store.fetch("m", "v1") / "model.onnx").read_bytes() == b"new"


def test_push_checks_the_manifest_first(tmp_path: Path) -> None:
    folder = version_folder(tmp_path / "src")
    (folder / "model.onnx").unlink()
    store = ModelStore(str(tmp_path / "store"))
    with pytest.raises(StoreError, match=r"model.onnx is missing"):
        store.push(folder, "m", "v1")
    assert store.models() == []


def test_missing_version_manifest_and_bad_manifest(tmp_path: Path) -> None:
    store = ModelStore(str(tmp_path))
    with pytest.raises(StoreError, match="model 'm' has no version 'v1'"):
        store.manifest("m", "v1")
    folder = version_folder(tmp_path / "m")
    (folder / MANIFEST).unlink()
    with pytest.raises(StoreError, match=r"manifest\.json is missing"):
        store.manifest("m", "v1")
    (folder / MANIFEST).write_text(json.dumps({"runtime": "onnx"}))
    with pytest.raises(StoreError, match=r"manifest\.json is invalid"):
        store.manifest("m", "v1")


def test_a_version_can_live_at_its_own_uri(tmp_path: Path) -> None:
    elsewhere = version_folder(tmp_path / "elsewhere", "anything")
    store = ModelStore(str(tmp_path / "store"))
    assert store.manifest("m", "v1", uri=str(elsewhere)).runtime == "onnx"


def test_folders_starting_with_underscore_are_not_models(tmp_path: Path) -> None:
    (tmp_path / "_state").mkdir()
    version_folder(tmp_path / "m")
    assert ModelStore(str(tmp_path)).models() == ["m"]


def test_state_round_trips_and_replaces_whole(tmp_path: Path) -> None:
    store = ModelStore(str(tmp_path))
    assert store.read_state("app/digits") is None
    store.write_state("app/digits", {"phase": "canary", "weight": 5})
    store.write_state("app/digits", {"phase": "promoted", "weight": 100})
    assert store.read_state("app/digits") == {"phase": "promoted", "weight": 100}
    assert sorted(p.name for p in (tmp_path / "_state" / "app").iterdir()) == [
        "digits.json"
    ]
    assert store.models() == []


ENTRY_NAME = re.compile(r"[0-9]{20}-[0-9a-f]{8}\.json")


def test_history_is_one_json_file_per_entry_beside_state(tmp_path: Path) -> None:
    store = ModelStore(str(tmp_path))
    store.write_state("app/digits", {"stable": "v1"})
    for n in range(3):
        store.append_history("app/digits", {"n": n})
    folder = tmp_path / "_history" / "app" / "digits"
    names = sorted(p.name for p in folder.iterdir())
    assert len(names) == 3 and all(ENTRY_NAME.fullmatch(name) for name in names)
    assert [json.loads((folder / name).read_text()) for name in names] == [
        {"n": n} for n in range(3)
    ]
    assert store.read_history("app/digits", 10) == [{"n": n} for n in range(3)]
    assert store.models() == []


def test_history_keeps_its_order_however_fast_entries_come(tmp_path: Path) -> None:
    # Two stores on one folder, as two Validators (or an old and a new one)
    # would be: no name collides and every entry is read back.
    first, second = ModelStore(str(tmp_path)), ModelStore(str(tmp_path))
    for n in range(200):
        (first if n % 2 else second).append_history("app/digits", {"n": n})
    assert first.read_history("app/digits", 1000) == [{"n": n} for n in range(200)]
    assert second.read_history("app/digits", 5) == [{"n": n} for n in range(195, 200)]


def test_history_skips_what_is_not_an_entry(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = ModelStore(str(tmp_path))
    store.append_history("app/digits", {"n": 1})
    folder = tmp_path / "_history" / "app" / "digits"
    # A write in progress, a stray file, and two damaged entries.
    (folder / ".00000000000000000001-abcdef01.json.tmp").write_text("{")
    (folder / "notes.txt").write_text("hello")
    (folder / "99999999999999999998-00000000.json").write_text("{half")
    (folder / "99999999999999999999-00000000.json").write_text("[1, 2]")
    with caplog.at_level(logging.WARNING):
        assert store.read_history("app/digits", 10) == [{"n": 1}]
    assert "skipping unreadable" in caplog.text
    assert "not a JSON object" in caplog.text
    # The limit counts entries, damaged ones included: the last two were those.
    assert store.read_history("app/digits", 2) == []


def test_history_that_cannot_be_listed_is_a_store_error(tmp_path: Path) -> None:
    store = ModelStore(str(tmp_path))
    (tmp_path / "_history" / "app").mkdir(parents=True)
    (tmp_path / "_history" / "app" / "digits").write_text("a file, not a folder")
    with pytest.raises(StoreError, match="cannot list history 'app/digits'"):
        store.read_history("app/digits", 10)


def test_history_is_read_sixteen_entries_at_a_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = ModelStore(str(tmp_path))
    for n in range(4 * HISTORY_READERS):
        store.append_history("app/digits", {"n": n})
    read_one = store_module._read_entry
    # Every read waits until HISTORY_READERS of them are under way together:
    # reads made one by one would break the barrier.
    barrier = threading.Barrier(HISTORY_READERS, timeout=10)
    lock = threading.Lock()
    active, most = 0, 0

    def read_together(entry: Location) -> dict[str, Any] | None:
        nonlocal active, most
        with lock:
            active += 1
            most = max(most, active)
        barrier.wait()
        try:
            return read_one(entry)
        finally:
            with lock:
                active -= 1

    monkeypatch.setattr(store_module, "_read_entry", read_together)
    assert store.read_history("app/digits", 1000) == [
        {"n": n} for n in range(4 * HISTORY_READERS)
    ]
    assert most == HISTORY_READERS


def test_a_failed_read_among_parallel_ones_is_a_store_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = ModelStore(str(tmp_path))
    for n in range(40):
        store.append_history("app/digits", {"n": n})
    read_one = store_module._read_entry
    names = sorted(p.name for p in (tmp_path / "_history/app/digits").iterdir())
    broken = names[20]

    def refuse_one(entry: Location) -> dict[str, Any] | None:
        if entry.name == broken:
            raise StoreError(f"cannot read {entry.name}: access denied")
        return read_one(entry)

    monkeypatch.setattr(store_module, "_read_entry", refuse_one)
    with pytest.raises(StoreError, match=f"cannot read {broken}: access denied"):
        store.read_history("app/digits", 100)
    # The entries after it, read without it, are still there to read.
    assert store.read_history("app/digits", 19) == [{"n": n} for n in range(21, 40)]
