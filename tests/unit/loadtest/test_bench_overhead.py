"""The interleaved mode's ratio table: each round's ratio is taken against
KServe in the same round, and the median of those is the number shown first."""

from __future__ import annotations

from loadtest.bench_overhead import rounds_table
from loadtest.loadgen import LoadResult


def result(concurrency: int, rps: float) -> LoadResult:
    return LoadResult(concurrency, int(rps), 1.0, rps, 1.0, 2.0, 3.0, {})


def test_ratios_pair_each_round_with_kserve_in_that_round() -> None:
    # Each round's ratio is against KServe's rate in that same round.
    rounds = [
        {
            ("kserve", "json", 8): result(8, 100.0),
            ("rf", "binary", 8): result(8, 120.0),
        },
        {
            ("kserve", "json", 8): result(8, 200.0),
            ("rf", "binary", 8): result(8, 190.0),
        },
        {
            ("kserve", "json", 8): result(8, 150.0),
            ("rf", "binary", 8): result(8, 150.0),
        },
    ]
    table = rounds_table(rounds, [8])
    assert table.splitlines() == [
        "| server | payload | c=8 vs KServe (rounds) |",
        "| --- | --- | --- |",
        "| rf | binary | **1.00x** (1.20, 0.95, 1.00) |",
    ]
