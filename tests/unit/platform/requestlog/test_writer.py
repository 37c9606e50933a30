"""The router's request log: sampled, written off the caller's thread in parts,
bounded in memory, and never raising into a request."""

from __future__ import annotations

import logging
import threading
import time
import tracemalloc
from collections.abc import Iterator
from datetime import date, datetime, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.dataset as pads
import pytest

from rayfleet.platform.config.signature import Signature
from rayfleet.platform.config.spec import RequestLogSpec
from rayfleet.platform.config.store import ModelStore
from rayfleet.platform.requestlog.sampling import Sampler
from rayfleet.platform.requestlog.writer import (
    RequestLog,
    RequestLogCounts,
    StoreSink,
)
from tests.unit.platform.requestlog.test_table import DIGITS, digits

SIGNATURES = {("digits", "v1"): DIGITS, ("digits", "v2"): DIGITS}
# 2026-11-30, 23:59:59 UTC.
BEFORE_MIDNIGHT = datetime(2026, 11, 30, 23, 59, 59, tzinfo=timezone.utc).timestamp()


class MemorySink:
    """Parts kept in memory; ``gate`` (when set) holds every write until opened."""

    def __init__(self, gate: threading.Event | None = None) -> None:
        self.parts: list[tuple[str, str, date, str, pa.Table]] = []
        self.gate = gate
        self.writing = threading.Event()

    def write(
        self, model: str, version: str, day: date, name: str, table: pa.Table
    ) -> None:
        self.writing.set()
        if self.gate is not None:
            assert self.gate.wait(30)
        self.parts.append((model, version, day, name, table))

    def rows(self) -> pa.Table:
        return pa.concat_tables([part[4] for part in self.parts])


class Refusing:
    """A store that refuses every part."""

    def write(self, *args: object) -> None:
        raise OSError("the bucket said no")


def spec(**fields: object) -> RequestLogSpec:
    return RequestLogSpec.model_validate(
        {"enabled": True, "sample_rate": 1.0, "flush_every_s": 3600, **fields}
    )


@pytest.fixture
def logs() -> Iterator[list[RequestLog]]:
    """Request logs to close after the test, so no thread outlives it."""
    made: list[RequestLog] = []
    yield made
    for log in made:
        log.close(10)


def make(
    logs: list[RequestLog], request_spec: RequestLogSpec, sink: object, **kw: object
) -> RequestLog:
    log = RequestLog(request_spec, SIGNATURES, sink, "router-a", **kw)  # type: ignore[arg-type]
    logs.append(log)
    return log


def record(log: RequestLog, request_id: str, rows: int = 4, **kw: object) -> None:
    inputs, outputs = digits(rows, len(request_id))
    fields: dict[str, object] = {"version": "v1", "outputs": outputs, **kw}
    log.record(
        request_id,
        "digits",
        str(fields.pop("version")),
        200,
        2.0,
        1.0,
        inputs,
        fields.pop("outputs"),  # type: ignore[arg-type]
        **fields,  # type: ignore[arg-type]
    )


def test_a_request_is_logged_whole_or_not_at_all(logs: list[RequestLog]) -> None:
    sink = MemorySink()
    log = make(logs, spec(sample_rate=0.3), sink)
    ids = [f"req-{n}" for n in range(300)]
    for request_id in ids:
        record(log, request_id, rows=3)
        record(log, request_id, rows=3, version="v2", shadow_of="v1")
    assert log.flush(30)
    table = sink.rows()
    expected = {i for i in ids if Sampler(0.3)(i)}
    assert 50 < len(expected) < 130
    for version in ("v1", "v2"):
        mine = table.filter(pa.compute.equal(table.column("version"), version))
        ids_logged = mine.column("request_id").to_pylist()
        assert set(ids_logged) == expected
        # Every row of each logged request, none twice.
        assert sorted(ids_logged) == sorted(i for i in expected for _ in range(3))
    assert log.counts() == RequestLogCounts(
        rows=6 * len(expected), dropped={"full": 0, "store": 0, "shape": 0}
    )


def test_parts_land_in_the_store_by_model_version_and_utc_day(
    tmp_path: Path, logs: list[RequestLog]
) -> None:
    now = [BEFORE_MIDNIGHT]
    store = ModelStore(str(tmp_path))
    log = make(logs, spec(), StoreSink(store), clock=lambda: now[0])
    record(log, "late")
    now[0] += 2  # 00:00:01 the next day
    record(log, "early")
    record(log, "canary", version="v2")
    assert log.flush(30)
    found = sorted(
        str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file()
    )
    assert [f.rsplit("/", 1)[0] for f in found] == [
        "_logs/digits/v1/date=2026-11-30",
        "_logs/digits/v1/date=2026-12-01",
        "_logs/digits/v2/date=2026-12-01",
    ]
    for name in found:
        assert name.rsplit("/", 1)[1].startswith("part-20261201T000001")
        assert name.endswith("Z-router-a.parquet")
    day = pads.dataset(
        str(tmp_path / "_logs/digits/v1/date=2026-12-01"), format="parquet"
    ).to_table()
    assert day.column("request_id").to_pylist() == ["early"] * 4
    assert day.column("time").to_pylist()[0] == datetime(
        2026, 12, 1, 0, 0, 1, tzinfo=timezone.utc
    )


def test_rows_wait_for_the_row_limit_or_the_period(logs: list[RequestLog]) -> None:
    sink = MemorySink()
    log = make(logs, spec(flush_max_rows=10), sink)
    record(log, "a")
    record(log, "b")
    time.sleep(0.3)
    assert sink.parts == []  # 8 rows: under the limit, and an hour to go
    record(log, "c")
    deadline = time.monotonic() + 10
    while not sink.parts and time.monotonic() < deadline:
        time.sleep(0.01)
    assert sink.rows().num_rows == 12
    timed = make(logs, spec(flush_every_s=0.05), MemorySink())
    record(timed, "d")
    deadline = time.monotonic() + 10
    while not timed.counts().rows and time.monotonic() < deadline:
        time.sleep(0.01)
    assert timed.counts().rows == 4


def test_the_memory_bound_holds_under_a_burst(logs: list[RequestLog]) -> None:
    # A store that hangs while a burst arrives: 2000 requests of 16 KiB, 32 MiB
    # offered against a bound of 256 KiB.
    gate = threading.Event()
    sink = MemorySink(gate)
    bound = 256 * 1024
    log = make(logs, spec(max_buffer_bytes=bound), sink)
    rng = np.random.default_rng(0)
    tracemalloc.start()
    try:
        baseline = tracemalloc.get_traced_memory()[0]
        held = []
        for n in range(2000):
            inputs = {"input": rng.random((64, 64), dtype=np.float32)}
            log.record(f"r{n}", "digits", "v1", 200, 1.0, 1.0, inputs, None)
            held.append(log.held_bytes)
        peak = tracemalloc.get_traced_memory()[1] - baseline
    finally:
        tracemalloc.stop()
    assert max(held) <= bound
    # What it holds, the one request being made, and bookkeeping: nowhere near
    # the 32 MiB sent.
    assert peak < bound + 2 * 1024 * 1024
    assert sink.writing.wait(10)  # the thread took some and hangs in the store
    # At most the 16 requests the bound holds were kept; every other row is
    # counted as dropped.
    kept_rows = 2000 * 64 - log.counts().dropped["full"]
    assert 0 < kept_rows <= bound // (64 * 64 * 4) * 64
    gate.set()
    assert log.flush(30)
    assert log.counts().rows == kept_rows
    assert sink.rows().num_rows == kept_rows
    assert log.held_bytes == 0


def test_a_refused_part_is_counted_and_logged_without_its_rows(
    logs: list[RequestLog], caplog: pytest.LogCaptureFixture
) -> None:
    log = make(logs, spec(), Refusing())
    record(log, "secret-request")
    with caplog.at_level(logging.WARNING):
        assert log.flush(30)
    counts = log.counts()
    assert (counts.rows, counts.write_failures, counts.dropped["store"]) == (0, 1, 4)
    text = caplog.text
    assert "4 rows of digits/v1" in text and "the bucket said no" in text
    assert "secret-request" not in text and "0." not in text.split("said no")[1]
    assert log.held_bytes == 0
    record(log, "next")  # the log goes on
    assert log.flush(30) and log.counts().write_failures == 2


def test_tensors_without_a_shared_batch_dimension_are_counted_not_logged(
    logs: list[RequestLog],
) -> None:
    sink = MemorySink()
    log = make(logs, spec(), sink)
    inputs, outputs = digits(4, 0)
    log.record("a", "digits", "v1", 200, 1.0, 1.0, inputs, {"label": np.zeros(3)})
    log.record("b", "digits", "v1", 200, 1.0, 1.0, {"input": np.zeros((0, 64))}, None)
    log.record("c", "digits", "v9", 200, 1.0, 1.0, inputs, outputs)  # not served
    assert log.flush(30)
    assert sink.parts == []
    assert log.counts().dropped == {"full": 0, "store": 0, "shape": 1}


def test_close_writes_what_waits_and_takes_no_more(logs: list[RequestLog]) -> None:
    sink = MemorySink()
    log = make(logs, spec(), sink)
    record(log, "a")
    assert log.close(30)
    assert sink.rows().num_rows == 4
    record(log, "b")
    assert log.held_bytes == 0 and log.counts().rows == 4
    assert log.close(1)  # again: harmless


def test_a_version_whose_tensors_cannot_be_named_is_left_out(
    caplog: pytest.LogCaptureFixture,
) -> None:
    odd = Signature.model_validate(
        {
            "inputs": [{"name": "status", "datatype": "FP32", "shape": [-1]}],
            "outputs": [{"name": "y", "datatype": "FP32", "shape": [-1]}],
        }
    )
    with caplog.at_level(logging.WARNING):
        log = RequestLog(spec(), {("m", "v"): odd}, MemorySink(), "r")
    log.close(10)
    assert log.layouts == {}
    assert "m/v not logged" in caplog.text


def test_counts_cross_a_process_boundary_as_plain_data() -> None:
    counts = RequestLogCounts(rows=5, write_failures=1, dropped={"full": 3})
    assert RequestLogCounts.from_dict(counts.to_dict()) == counts
    assert RequestLogCounts.from_dict({}) == RequestLogCounts()
