"""Where the request log lies in the store, and how a part gets there.

::

    {store}/_logs/{model}/{version}/date=2026-11-30/part-20261130T142501123456Z-{writer}.parquet

A folder per UTC day, named as Hive partitions are, so a day is one folder to
hand to ``rayfleet validate --data`` or ``rayfleet batch``, and a dataset reader
given the version's folder sees a ``date`` column. A part is named by the time it
was written and its writer (a router replica), so parts sort by time and two
routers never write the same name. On a local folder a part is written under a
hidden name and renamed, so a reader never sees half of one (Parquet readers skip
names starting with ``.``); an object store's PUT is whole.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable
from datetime import date, datetime

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from rayfleet.platform.config.location import Location

__all__ = [
    "day_folder",
    "log_days",
    "log_parts",
    "part_name",
    "write_part",
    "writer_name",
]

_DAY = re.compile(r"date=(\d{4}-\d{2}-\d{2})")
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")


def day_folder(day: date) -> str:
    """The folder of one UTC day, e.g. ``date=2026-11-30``."""
    return f"date={day.isoformat()}"


def writer_name(writer: str) -> str:
    """``writer`` as it can appear in a file name: letters, digits, ``_``, ``-``."""
    return _UNSAFE.sub("_", writer)[:64] or "writer"


def part_name(at: datetime, writer: str) -> str:
    """The name of a part ``writer`` wrote at ``at`` (a UTC time)."""
    return f"part-{at:%Y%m%dT%H%M%S%f}Z-{writer_name(writer)}.parquet"


def write_part(folder: Location, name: str, table: pa.Table) -> Location:
    """Write ``table`` as the Parquet file ``name`` in ``folder``, whole."""
    target = folder.child(name)
    if not folder.is_local:
        pq.write_table(table, target.path, filesystem=folder.fs)
        return target
    folder.fs.create_dir(folder.path, recursive=True)
    scratch = folder.child(f".{name}.{uuid.uuid4().hex[:8]}.tmp")
    pq.write_table(table, scratch.path, filesystem=folder.fs)
    folder.fs.move(scratch.path, target.path)
    return target


def log_days(folder: Location) -> list[date]:
    """The days a version's log folder holds, oldest first."""
    selector = pafs.FileSelector(folder.path, allow_not_found=True)
    days = []
    for info in folder.fs.get_file_info(selector):
        match = _DAY.fullmatch(info.base_name)
        if info.type != pafs.FileType.Directory or match is None:
            continue
        try:
            days.append(date.fromisoformat(match.group(1)))
        except ValueError:  # date=2026-13-45 is no day
            continue
    return sorted(days)


def log_parts(folder: Location, days: Iterable[date]) -> list[Location]:
    """The Parquet parts of ``days`` in a version's log folder, in time order."""
    return [
        part
        for day in sorted(days)
        for part in folder.child(day_folder(day)).files()
        if part.name.endswith(".parquet") and not part.name.startswith((".", "_"))
    ]
