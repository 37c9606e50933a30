"""What a step load run recorded, per second and summed up: the comparison
numbers of each policy, the table, and the plot."""

from __future__ import annotations

import csv
import itertools
import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from loadtest.common import markdown_table
from loadtest.step_load.profile import Profile

__all__ = [
    "RunResult",
    "Summary",
    "plot",
    "read_run",
    "report_runs",
    "summarize",
    "summary_table",
]


@dataclass(frozen=True)
class RunResult:
    """What one policy's run recorded, times in seconds since the load began."""

    policy: str
    timeline: list[dict[str, float]]
    starts: np.ndarray
    latencies_ms: np.ndarray
    ok: np.ndarray
    versions: list[str]


@dataclass(frozen=True)
class Summary:
    """The comparison row of one policy; seconds are since the step or the drop."""

    policy: str
    enough_replicas: int
    low_replicas: int
    first_added_s: float | None
    step_to_enough_s: float | None
    peak_replicas: int
    p99_step_ms: float
    direction_changes: list[int]
    scale_down_s: float | None
    max_latency_scale_down_ms: float
    failed: int
    requests: int


def _read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as file:
        return list(csv.DictReader(file))


def read_run(policy: str, profile: Profile, files: dict[str, Path]) -> RunResult:
    """Each second of one policy's run, from the CSVs its two processes wrote."""
    users = [(float(r["time"]), int(r["users"])) for r in _read_csv(files["users"])]
    t0 = users[0][0]
    rows = _read_csv(files["requests"])
    starts = np.array([float(r["start"]) - t0 for r in rows])
    latencies = np.array([float(r["latency_ms"]) for r in rows])
    ok = np.array([r["ok"] == "1" for r in rows], dtype=bool)
    ends = starts + latencies / 1000.0
    samples = _read_csv(files["replicas"])
    versions = sorted({r["deployment"] for r in samples})

    timeline = []
    for second in range(math.ceil(profile.duration_s)):
        row: dict[str, float] = {"t": float(second)}
        row["users"] = float(profile.users_at(second) or 0)
        row["users_running"] = float(
            next((n for at, n in reversed(users) if at - t0 <= second + 1), 0)
        )
        overlap = np.clip(
            np.minimum(ends, second + 1) - np.maximum(starts, second), 0, 1
        )
        row["in_flight"] = float(overlap.sum())
        done = (ends >= second) & (ends < second + 1)
        row["rps"] = float(done.sum())
        row["failures"] = float((done & ~ok).sum())
        finished = latencies[done & ok]
        row["p50_ms"] = (
            float(np.percentile(finished, 50)) if finished.size else math.nan
        )
        row["p99_ms"] = (
            float(np.percentile(finished, 99)) if finished.size else math.nan
        )
        total = 0.0
        for version in versions:
            running = [
                int(r["running"])
                for r in samples
                if r["deployment"] == version and float(r["time"]) - t0 <= second + 0.5
            ]
            count = float(running[-1]) if running else math.nan
            row[f"replicas {version}"] = count
            total += count
        row["replicas"] = total
        timeline.append(row)
    return RunResult(policy, timeline, starts, latencies, ok, versions)


def _direction_changes(counts: Sequence[float]) -> int:
    signs = [
        1 if b > a else -1
        for a, b in itertools.pairwise(counts)
        if b != a and not (math.isnan(a) or math.isnan(b))
    ]
    return sum(1 for a, b in itertools.pairwise(signs) if a != b)


def summarize(
    result: RunResult, profile: Profile, target: float, max_replicas: int
) -> Summary:
    """The comparison numbers of one run (see the package docstring)."""
    bounds = profile.bounds()
    peak = max(range(len(bounds)), key=lambda i: bounds[i][2])
    step_at, drop_at, high_users = bounds[peak]
    low_users = bounds[peak + 1][2] if peak + 1 < len(bounds) else bounds[0][2]
    need_high = min(math.ceil(high_users / target), max_replicas)
    need_low = max(1, min(math.ceil(low_users / target), max_replicas))
    replicas = {int(row["t"]): row["replicas"] for row in result.timeline}
    before_step = replicas.get(math.ceil(step_at) - 1, replicas.get(0, math.nan))

    def first_second(start: float, end: float, holds: Any) -> float | None:
        for second in range(math.ceil(start), math.ceil(end)):
            if holds(replicas.get(second, math.nan)):
                return second - start
        return None

    in_step = (result.starts >= step_at) & (result.starts < drop_at)
    after_drop = result.starts >= drop_at
    step_latencies = result.latencies_ms[in_step & result.ok]
    changes = []
    for start, end, _ in bounds:
        counts = [replicas[s] for s in range(math.ceil(start), math.ceil(end))]
        changes.append(_direction_changes(counts))
    return Summary(
        policy=result.policy,
        enough_replicas=need_high,
        low_replicas=need_low,
        first_added_s=first_second(step_at, drop_at, lambda n: n > before_step),
        step_to_enough_s=first_second(step_at, drop_at, lambda n: n >= need_high),
        peak_replicas=int(np.nanmax(list(replicas.values()))),
        p99_step_ms=float(np.percentile(step_latencies, 99))
        if step_latencies.size
        else math.nan,
        direction_changes=changes,
        scale_down_s=first_second(drop_at, profile.duration_s, lambda n: n <= need_low),
        max_latency_scale_down_ms=float(result.latencies_ms[after_drop].max())
        if after_drop.any()
        else math.nan,
        failed=int((~result.ok).sum()),
        requests=int(result.ok.size),
    )


def summary_table(summaries: Sequence[Summary], profile: Profile) -> str:
    """The comparison table, one column per policy."""

    def seconds(value: float | None) -> str:
        return "not within the run" if value is None else f"{value:.0f} s"

    def scale_down(summary: Summary) -> str:
        if summary.peak_replicas <= summary.low_replicas:
            return "n/a: never scaled up"
        return seconds(summary.scale_down_s)

    phases = "/".join(str(p.users) for p in profile.phases)
    enough = summaries[0].enough_replicas if summaries else 0
    rows = [
        (
            "seconds from the step to a first added replica",
            [seconds(s.first_added_s) for s in summaries],
        ),
        (
            f"seconds from the step to enough replicas ({enough})",
            [seconds(s.step_to_enough_s) for s in summaries],
        ),
        ("most replicas running", [str(s.peak_replicas) for s in summaries]),
        ("p99 during the step", [f"{s.p99_step_ms:.0f} ms" for s in summaries]),
        (
            f"direction changes per phase ({phases} users)",
            ["/".join(map(str, s.direction_changes)) for s in summaries],
        ),
        ("seconds to scale down after the drop", [scale_down(s) for s in summaries]),
        (
            "slowest request after the drop",
            [f"{s.max_latency_scale_down_ms:.0f} ms" for s in summaries],
        ),
        ("failed requests", [f"{s.failed} of {s.requests}" for s in summaries]),
    ]
    header = ["", *(s.policy for s in summaries)]
    return markdown_table(header, [[name, *cells] for name, cells in rows])


def plot(results: Sequence[RunResult], path: Path) -> None:
    """Users, replicas and latency over time, every policy on the same axes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (load, replicas, latency) = plt.subplots(
        3, 1, sharex=True, figsize=(10, 9), constrained_layout=True
    )
    for index, result in enumerate(results):
        color = f"C{index}"
        t = [row["t"] for row in result.timeline]
        if index == 0:
            load.step(
                t,
                [row["users"] for row in result.timeline],
                "k",
                where="post",
                label="users",
            )
        load.plot(
            t,
            [row["in_flight"] for row in result.timeline],
            color,
            label=f"in flight ({result.policy})",
        )
        replicas.step(
            t,
            [row["replicas"] for row in result.timeline],
            color,
            where="post",
            label=result.policy,
        )
        latency.plot(
            t,
            [row["p50_ms"] for row in result.timeline],
            color,
            linestyle=":",
            label=f"p50 ({result.policy})",
        )
        latency.plot(
            t,
            [row["p99_ms"] for row in result.timeline],
            color,
            label=f"p99 ({result.policy})",
        )
    load.set_ylabel("users / requests")
    replicas.set_ylabel("running replicas")
    latency.set_ylabel("latency (ms)")
    latency.set_yscale("log")
    latency.set_xlabel("seconds since the load began")
    for axes in (load, replicas, latency):
        axes.grid(alpha=0.3)
        axes.legend(loc="upper right", fontsize="small")
    figure.savefig(path, dpi=120)
    plt.close(figure)


def report_runs(
    results: Sequence[RunResult],
    profile: Profile,
    target: float,
    max_replicas: int,
    out: Path,
) -> None:
    """Write each policy's timeline, the plot and the summary under ``out``, and
    print the table."""
    summaries = []
    for result in results:
        path = out / f"{result.policy}-timeline.csv"
        with path.open("w", newline="") as file:
            writer = csv.DictWriter(file, fieldnames=list(result.timeline[0]))
            writer.writeheader()
            writer.writerows(result.timeline)
        summaries.append(summarize(result, profile, target, max_replicas))
    plot(results, out / "step_load.png")
    table = summary_table(summaries, profile)
    (out / "summary.md").write_text(table + "\n")
    (out / "summary.json").write_text(
        json.dumps([asdict(s) for s in summaries], indent=2) + "\n"
    )
    print(table)
    print(f"\nwrote {out}/: step_load.png, summary.md, *-timeline.csv")
