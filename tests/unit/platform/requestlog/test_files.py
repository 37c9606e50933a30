"""Where the request log lies: a folder per UTC day, parts named by time and writer."""

from __future__ import annotations

from datetime import date, datetime, timezone
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from rayfleet.platform.config.location import Location
from rayfleet.platform.requestlog.files import (
    day_folder,
    log_days,
    log_parts,
    part_name,
    write_part,
    writer_name,
)


def test_days_are_hive_partitions_and_parts_sort_as_times() -> None:
    assert day_folder(date(2026, 11, 30)) == "date=2026-11-30"
    early = datetime(2026, 11, 30, 9, 5, 1, 2, tzinfo=timezone.utc)
    late = datetime(2026, 11, 30, 10, 0, 0, 0, tzinfo=timezone.utc)
    assert part_name(early, "a1b2") == "part-20261130T090501000002Z-a1b2.parquet"
    assert part_name(early, "zzz") < part_name(late, "aaa")


def test_a_writer_name_keeps_only_what_a_file_name_can_hold() -> None:
    assert writer_name("router-7_x") == "router-7_x"
    assert writer_name("a/b c:\u20ac") == "a_b_c__"
    assert writer_name("") == "writer"
    assert len(writer_name("x" * 500)) == 64


def test_a_part_is_written_whole_with_nothing_left_beside_it(tmp_path: Path) -> None:
    folder = Location.parse(str(tmp_path / "logs" / "date=2026-11-30"))
    table = pa.table({"a": [1, 2, 3]})
    written = write_part(folder, "part-1-r.parquet", table)
    assert pq.read_table(written.path).equals(table)
    assert [p.name for p in Path(folder.path).iterdir()] == ["part-1-r.parquet"]


def test_days_and_parts_are_listed_in_order_and_strays_ignored(
    tmp_path: Path,
) -> None:
    root = Location.parse(str(tmp_path))
    assert log_days(root.child("nothing")) == []
    for day in ("date=2026-12-01", "date=2026-11-30"):
        for name in ("part-2-r.parquet", "part-1-r.parquet", ".part-3.tmp", "_SUCCESS"):
            (tmp_path / day).mkdir(exist_ok=True)
            (tmp_path / day / name).write_bytes(b"")
    (tmp_path / "date=2026-13-45").mkdir()
    (tmp_path / "other").mkdir()
    (tmp_path / "date=2026-11-29").write_bytes(b"")  # a file, not a day
    days = log_days(root)
    assert days == [date(2026, 11, 30), date(2026, 12, 1)]
    parts = [p.path[len(str(tmp_path)) + 1 :] for p in log_parts(root, days[::-1])]
    assert parts == [
        "date=2026-11-30/part-1-r.parquet",
        "date=2026-11-30/part-2-r.parquet",
        "date=2026-12-01/part-1-r.parquet",
        "date=2026-12-01/part-2-r.parquet",
    ]
