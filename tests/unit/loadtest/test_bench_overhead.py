"""The interleaved mode's ratio tables: each round's ratio is taken against the
baseline (KServe, or MLServer) in the same round, and the median of those is the
number shown first."""

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


def test_ratios_against_mlserver_leave_mlserver_out_and_keep_kserve_in() -> None:
    rounds = [
        {
            ("kserve", "json", 32): result(32, 100.0),
            ("mlserver", "json", 32): result(32, 80.0),
            ("rf", "json", 32): result(32, 60.0),
        },
        {
            ("kserve", "json", 32): result(32, 90.0),
            ("mlserver", "json", 32): result(32, 100.0),
            ("rf", "json", 32): result(32, 110.0),
        },
    ]
    assert rounds_table(rounds, [32], "mlserver").splitlines() == [
        "| server | payload | c=32 vs MLServer (rounds) |",
        "| --- | --- | --- |",
        "| kserve | json | **1.07x** (1.25, 0.90) |",
        "| rf | json | **0.93x** (0.75, 1.10) |",
    ]


def test_from_five_rounds_the_median_carries_its_interval() -> None:
    rates = [100.0, 125.0, 80.0, 95.0, 110.0, 70.0, 90.0, 105.0]
    rounds = [
        {("kserve", "json", 8): result(8, 100.0), ("rf", "json", 8): result(8, rate)}
        for rate in rates
    ]
    assert rounds_table(rounds, [8]).splitlines()[-1] == (
        "| rf | json | **0.97x** [0.80, 1.10] "
        "(1.00, 1.25, 0.80, 0.95, 1.10, 0.70, 0.90, 1.05) |"
    )
