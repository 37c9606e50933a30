"""Output that appears whole or not at all: the scored folder and the error file."""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from rayfleet.platform.config.location import Location
from rayfleet.platform.errors import ConfigError
from rayfleet.platform.scoring.plan import VALUES_COLUMN

__all__ = ["SUCCESS_MARKER", "commit_folder", "write_error_file"]

# Written last into a committed output folder; readers skip names starting "_".
SUCCESS_MARKER = "_SUCCESS"


def _touch(location: Location) -> None:
    with location.fs.open_output_stream(location.path):
        pass


def commit_folder(staged: Location, final: Location, *, overwrite: bool) -> None:
    """Move the finished folder ``staged`` to ``final``, marked with ``_SUCCESS``.

    Local filesystem: a rename, atomic (``staged`` is a sibling, so on the same
    filesystem); an existing ``final`` is renamed aside first and deleted after.
    Object stores have no rename: the files are copied into place and
    ``_SUCCESS`` is written last, so a reader that sees it sees every file (a
    crash mid-copy leaves a folder without it).
    """
    if final.exists():
        if not overwrite:
            raise ConfigError(
                f"{final.uri} already exists; pass overwrite to replace it"
            )
    else:
        overwrite = False
    if final.is_local:
        _touch(staged.child(SUCCESS_MARKER))
        aside = staged.sibling(f"{staged.name}.previous")
        if overwrite:
            final.fs.move(final.path, aside.path)
        final.fs.move(staged.path, final.path)
        aside.remove()
        return
    if overwrite:
        final.remove()
    final.fs.create_dir(final.path, recursive=True)
    pafs.copy_files(
        staged.path,
        final.path,
        source_filesystem=staged.fs,
        destination_filesystem=final.fs,
    )
    _touch(final.child(SUCCESS_MARKER))


def write_error_file(
    parts: Sequence[Location], final: Location, schema: pa.Schema
) -> int:
    """Concatenate error parts (Parquet) into one file at ``final``; row count.

    JSON Lines when ``final`` ends in ``.jsonl`` or ``.json`` (``values`` parsed
    back into an object), Parquet otherwise. Written beside ``final`` and moved
    into place, so a reader never sees half a file. Parts are read one at a
    time: the job never holds every error row at once.
    """
    scratch = final.sibling(f".{final.name}.{uuid.uuid4().hex[:12]}.tmp")
    final.fs.create_dir(final.path.rsplit("/", 1)[0], recursive=True)
    rows = 0
    as_json = final.name.endswith((".jsonl", ".json"))
    try:
        with final.fs.open_output_stream(scratch.path) as stream:
            writer = None if as_json else pq.ParquetWriter(stream, schema)
            for part in parts:
                table = pq.read_table(part.path, filesystem=part.fs).cast(schema)
                rows += table.num_rows
                if writer is not None:
                    writer.write_table(table)
                    continue
                for row in table.to_pylist():
                    row[VALUES_COLUMN] = json.loads(row[VALUES_COLUMN] or "null")
                    stream.write((json.dumps(row, default=str) + "\n").encode())
            if writer is not None:
                writer.close()
        final.fs.move(scratch.path, final.path)
    finally:
        scratch.remove()
    return rows
