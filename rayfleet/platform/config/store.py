"""The model store: versions, manifests and reference data on any pyarrow filesystem.

Layout under a root URI (a local path, ``s3://bucket/prefix``, ``gs://...``)::

    {root}/{model}/{version}/manifest.json      runtime and signature
    {root}/{model}/{version}/model.onnx         the artifact the manifest names
    {root}/{model}/{version}/reference.parquet  optional: inputs and predictions
                                                 on reference data (drift baseline)
    {root}/_state/{app}/{model}.json            the model's rollout, replaced whole
    {root}/_history/{app}/{model}/{entry}.json  every change of its rollouts, one
                                                 object each, never rewritten
    {root}/_logs/{model}/{version}/date={day}/part-*.parquet
                                                the request log, when the spec
                                                 turns it on (.requestlog)

Nothing here imports Ray: replicas call :meth:`ModelStore.fetch` to get a local copy
of a version, and the CLI calls :meth:`ModelStore.push` to write one.
"""

from __future__ import annotations

import json
import logging
import os
import re
import secrets
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Literal

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from rayfleet.platform.config.location import Location
from rayfleet.platform.config.signature import Signature
from rayfleet.platform.errors import StoreError

__all__ = ["LOGS", "MANIFEST", "REFERENCE", "Manifest", "ModelStore", "PythonEntry"]

MANIFEST = "manifest.json"
REFERENCE = "reference.parquet"
# The request log's folder under the root; "_" keeps it out of the models.
LOGS = "_logs"

logger = logging.getLogger(__name__)

# A history entry's name: nanoseconds since the epoch, zero-padded so that names
# sort as times do, then a random suffix so that two Validators writing in the
# same nanosecond (two apps, or an old replica still draining) never collide.
_HISTORY_ENTRY = re.compile(r"[0-9]{20}-[0-9a-f]{8}\.json")
# History entries read at once: on an object store each is one GET of a few
# milliseconds to tens of them, so a thousand read one by one could outlast the
# router's forward timeout; sixteen at a time keeps well within it without
# flooding the store or the process with threads.
HISTORY_READERS = 16


class PythonEntry(BaseModel):
    """For the ``python`` runtime: the factory that loads a predictor.

    ``callable`` is ``module:function``. The module is looked up first among the
    version's own files (``predict.py`` shipped beside the artifact), then on the
    import path. ``function(version_dir)`` returns a predictor: a callable from a
    dict of input arrays to a dict of output arrays.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    callable: str = Field(pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")


class Manifest(BaseModel):
    """What a version is: how to run it and what it takes and returns."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    runtime: Literal["onnx", "python", "triton"]
    signature: Signature
    artifact: str | None = Field(
        default=None, description="file in the version folder; none for triton"
    )
    python: PythonEntry | None = None
    labels: tuple[str, ...] | None = Field(
        default=None, description="class names, indexed by the predicted class id"
    )
    description: str = ""

    def to_json(self) -> str:
        """The manifest as the JSON text stored in ``manifest.json``."""
        return self.model_dump_json(indent=2, exclude_none=True)


def _open_uri(uri: str) -> Location:
    try:
        return Location.parse(uri)
    except (ValueError, OSError) as error:
        raise StoreError(f"cannot open store {uri!r}: {error}") from error


class ModelStore:
    """Versions of models under one root URI."""

    def __init__(self, root: str) -> None:
        self.root = root
        self._root = _open_uri(root)

    @property
    def uri(self) -> str:
        """The root URI, with a local path made absolute."""
        return self._root.uri

    def version_uri(self, model: str, version: str) -> str:
        """The URI of a version's folder."""
        return self._root.child(f"{model}/{version}").uri

    def _version(self, model: str, version: str, uri: str | None) -> Location:
        if uri is not None:
            return _open_uri(uri)
        return self._root.child(f"{model}/{version}")

    def models(self) -> list[str]:
        """Names of the models in the store, sorted."""
        return self._folders(self._root.path)

    def versions(self, model: str) -> list[str]:
        """Names of a model's versions, sorted."""
        return self._folders(f"{self._root.path}/{model}")

    def _folders(self, path: str) -> list[str]:
        try:
            infos = self._root.fs.get_file_info(pafs.FileSelector(path))
        except FileNotFoundError:
            return []
        except OSError as error:
            raise StoreError(f"cannot list {path!r}: {error}") from error
        return sorted(
            info.base_name
            for info in infos
            if info.type == pafs.FileType.Directory
            and not info.base_name.startswith("_")
        )

    def manifest(self, model: str, version: str, uri: str | None = None) -> Manifest:
        """Read and check a version's manifest, and that its artifact exists.

        Raises :class:`StoreError` naming what is missing or wrong.
        """
        where = self._version(model, version, uri)
        manifest_path = f"{where.path}/{MANIFEST}"
        try:
            with where.fs.open_input_stream(manifest_path) as stream:
                text = stream.read()
        except FileNotFoundError:
            if not where.exists():
                raise StoreError(
                    f"model {model!r} has no version {version!r} in the store "
                    f"(nothing at {where.uri})"
                ) from None
            raise StoreError(f"{where.uri}/{MANIFEST} is missing") from None
        except OSError as error:
            raise StoreError(f"cannot read {where.uri}/{MANIFEST}: {error}") from error
        try:
            manifest = Manifest.model_validate(json.loads(text))
        except (ValueError, ValidationError) as error:
            raise StoreError(f"{where.uri}/{MANIFEST} is invalid: {error}") from error
        if manifest.artifact is not None:
            artifact = where.fs.get_file_info(f"{where.path}/{manifest.artifact}")
            if artifact.type != pafs.FileType.File:
                missing = f"{where.uri}/{manifest.artifact}"
                raise StoreError(f"{missing} is missing (the manifest names it)")
        return manifest

    def copies(self, model: str, version: str, uri: str | None = None) -> bool:
        """Whether :meth:`fetch` copies the version's files (a remote store)."""
        return not self._version(model, version, uri).is_local

    def loaded_bytes(self, model: str, version: str, uri: str | None = None) -> int:
        """Bytes of the version's files a runtime loads: all of them but its
        manifest and reference (an ONNX model's external data included). What a
        pool counts for it against ``max_loaded_bytes``, since a runtime holds
        about its weights once loaded."""
        where = self._version(model, version, uri)
        selector = pafs.FileSelector(where.path, recursive=True, allow_not_found=True)
        try:
            infos = where.fs.get_file_info(selector)
        except OSError as error:
            raise StoreError(f"cannot list {where.uri}: {error}") from error
        skipped = {f"{where.path}/{MANIFEST}", f"{where.path}/{REFERENCE}"}
        return sum(
            int(info.size or 0)
            for info in infos
            if info.type == pafs.FileType.File and info.path not in skipped
        )

    def fetch(self, model: str, version: str, uri: str | None = None) -> Path:
        """A local folder holding the version's files.

        A local store is used in place; a remote one is copied to a new temporary
        folder that the caller owns.
        """
        where = self._version(model, version, uri)
        if where.is_local:
            return Path(where.path)
        local = Path(tempfile.mkdtemp(prefix=f"rayfleet-{model}-{version}-"))
        try:
            pafs.copy_files(
                where.path,
                str(local),
                source_filesystem=where.fs,
                destination_filesystem=pafs.LocalFileSystem(),
            )
        except OSError as error:
            shutil.rmtree(local, ignore_errors=True)
            raise StoreError(f"cannot copy {where.uri}: {error}") from error
        return local

    def reference(
        self, model: str, version: str, uri: str | None = None
    ) -> pa.Table | None:
        """The version's reference table, or ``None`` when it has none."""
        where = self._version(model, version, uri)
        path = f"{where.path}/{REFERENCE}"
        if where.fs.get_file_info(path).type != pafs.FileType.File:
            return None
        return pq.read_table(path, filesystem=where.fs)

    def write_reference(
        self, model: str, version: str, table: pa.Table, uri: str | None = None
    ) -> str:
        """Replace the version's reference table with ``table``; its URI.

        On a local folder it is written under a hidden name and renamed, so the
        Validator never reads half of one; an object store's PUT is whole.
        """
        where = self._version(model, version, uri)
        if not where.exists():
            raise StoreError(
                f"model {model!r} has no version {version!r} in the store "
                f"(nothing at {where.uri})"
            )
        target = where.child(REFERENCE)
        try:
            if where.is_local:
                scratch = where.child(f".{REFERENCE}.{uuid.uuid4().hex}.tmp")
                pq.write_table(table, scratch.path, filesystem=where.fs)
                where.fs.move(scratch.path, target.path)
            else:
                pq.write_table(table, target.path, filesystem=where.fs)
        except OSError as error:
            raise StoreError(f"cannot write {target.uri}: {error}") from error
        return target.uri

    def request_log(self, model: str, version: str) -> Location:
        """The folder of a version's request log (which may not exist yet)."""
        return self._root.child(f"{LOGS}/{model}/{version}")

    def read_state(self, key: str) -> dict[str, Any] | None:
        """The JSON document saved under ``_state/{key}.json``, if any."""
        path = f"{self._root.path}/_state/{key}.json"
        try:
            with self._root.fs.open_input_stream(path) as stream:
                loaded: dict[str, Any] = json.loads(stream.read())
                return loaded
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as error:
            raise StoreError(f"cannot read state {key!r}: {error}") from error

    def write_state(self, key: str, state: Mapping[str, Any]) -> None:
        """Save a JSON document under ``_state/{key}.json``, replacing it whole.

        Written to a temporary name and moved into place, so a reader never sees
        half a document (on object stores the move is a copy, still whole).
        """
        path = f"{self._root.path}/_state/{key}.json"
        folder = path.rsplit("/", 1)[0]
        self._root.fs.create_dir(folder, recursive=True)
        scratch = f"{path}.{uuid.uuid4().hex}.tmp"
        with self._root.fs.open_output_stream(scratch) as stream:
            stream.write(json.dumps(state, indent=1).encode())
        self._root.fs.move(scratch, path)

    def append_history(self, key: str, entry: Mapping[str, Any]) -> None:
        """Add ``entry`` as a new object under ``_history/{key}/``.

        Object stores have no append, so each entry is its own small object named
        by the time it was written (:data:`_HISTORY_ENTRY`): nothing is ever
        rewritten, and a listing in name order is the history in order. An object
        store's PUT is whole and needs no folder, so an entry costs one request
        there (a move would be a copy and a delete); on a local folder it is
        written under a hidden name and renamed, so a reader never sees half of one.
        """
        folder = self._root.child(f"_history/{key}")
        name = f"{_history_clock.next_ns():020d}-{secrets.token_hex(4)}.json"
        data = json.dumps(entry).encode()
        target = folder.child(name)
        if not folder.is_local:
            with folder.fs.open_output_stream(target.path) as stream:
                stream.write(data)
            return
        folder.fs.create_dir(folder.path, recursive=True)
        scratch = folder.child(f".{name}.tmp")
        with folder.fs.open_output_stream(scratch.path) as stream:
            stream.write(data)
        folder.fs.move(scratch.path, target.path)

    def read_history(self, key: str, limit: int) -> list[dict[str, Any]]:
        """The last ``limit`` (at least 1) entries under ``_history/{key}/``, oldest
        first.

        Entries are read :data:`HISTORY_READERS` at a time. An entry that is not a
        JSON object is skipped with a warning (it still counts towards ``limit``),
        so one damaged file does not hide the rest; a store that cannot be listed
        or read is a :class:`StoreError`.
        """
        if limit < 1:
            raise ValueError(f"limit must be at least 1: {limit}")
        folder = self._root.child(f"_history/{key}")
        try:
            names = [f for f in folder.files() if _HISTORY_ENTRY.fullmatch(f.name)]
        except OSError as error:
            raise StoreError(f"cannot list history {key!r}: {error}") from error
        wanted = names[-limit:]
        if not wanted:
            return []
        pool = ThreadPoolExecutor(
            max_workers=min(HISTORY_READERS, len(wanted)),
            thread_name_prefix="rayfleet-history",
        )
        try:
            # map answers in the listing's order, and raises a failed read's error.
            read = list(pool.map(_read_entry, wanted))
        finally:
            # After a failure, the reads not yet started are not made at all.
            pool.shutdown(wait=False, cancel_futures=True)
        return [entry for entry in read if entry is not None]

    def push(
        self,
        source: str | os.PathLike[str],
        model: str,
        version: str,
        *,
        overwrite: bool = False,
    ) -> str:
        """Copy a local version folder into the store and return its URI.

        The folder's manifest is checked first, so the store never holds a version
        that cannot load. An existing version is kept unless ``overwrite``.
        """
        source_path = Path(source)
        local = ModelStore(str(source_path.parent))
        local.manifest(model, version, uri=str(source_path))
        where = self._version(model, version, None)
        exists = where.exists()
        if exists and not overwrite:
            raise StoreError(
                f"{where.uri} already exists; pass overwrite to replace it"
            )
        if exists:
            where.fs.delete_dir(where.path)
        where.fs.create_dir(where.path, recursive=True)
        pafs.copy_files(
            str(source_path.resolve()),
            where.path,
            source_filesystem=pafs.LocalFileSystem(),
            destination_filesystem=where.fs,
        )
        return where.uri


def _read_entry(entry: Location) -> dict[str, Any] | None:
    """One history entry; None when it is gone or is not a JSON object."""
    try:
        with entry.fs.open_input_stream(entry.path) as stream:
            text = stream.read()
    except FileNotFoundError:
        return None  # removed between the listing and the read
    except OSError as error:
        raise StoreError(f"cannot read {entry.uri}: {error}") from error
    try:
        loaded = json.loads(text)
    except ValueError as error:
        logger.warning("skipping unreadable %s: %s", entry.uri, error)
        return None
    if not isinstance(loaded, dict):
        logger.warning("skipping %s: not a JSON object", entry.uri)
        return None
    return loaded


class _MonotonicClock:
    """Wall-clock nanoseconds that never repeat or go back within this process.

    Entries written in one call (a promotion and the next canary's start share a
    timestamp) keep their order, and a clock stepped back by NTP cannot put a new
    entry before an old one written by the same process.
    """

    def __init__(self) -> None:
        self._last = 0
        self._lock = threading.Lock()

    def next_ns(self) -> int:
        with self._lock:
            self._last = max(time.time_ns(), self._last + 1)
            return self._last


_history_clock = _MonotonicClock()
