"""Where a request's CPU time goes on the hop: the router and the replica, sampled.

Serves digits v1 in its own replica (the demo's canary layout, rayfleet's Serve
settings), drives a closed-loop load of v2 JSON requests (4 rows) from a nice-19
process, and samples the router's and the replica's processes with py-spy at the
same time. Each sample is put in one category by its innermost frame that names
one (HTTP server, rayfleet's codecs, Serve's handle routing, gRPC, pickling,
logging, metrics, the model, ...), so the table reads as "share of the process's
busy samples". Samples that end in a wait inside C (a thread parked in Ray's core
worker or a pool) cannot be told apart from real work and are counted separately.

    .venv/bin/python -m loadtest.profile_hop [-c 1 32] [--seconds 10] \
        [--transport direct]

Needs py-spy (a dev dependency) and permission to read other processes' memory
(root, or ptrace allowed). Loopback only; stops its server at the end.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import threading
from collections import Counter
from pathlib import Path

import numpy as np

from loadtest.bench_overhead import ROWS, Target, digits_payloads, running
from loadtest.common import actor_pids, free_port, markdown_table, write_report
from loadtest.loadgen import LoadResult, infer_load
from loadtest.servers import rayfleet_env, target_command

# Innermost match wins: a JSON decode inside rayfleet's codec is the codec's.
CATEGORIES: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    (name, re.compile(pattern))
    for name, pattern in (
        ("model (onnxruntime)", r"onnxruntime|guarded_predict"),
        ("logging", r"\(logging/|logging_utils\.py"),
        ("metrics", r"ray/util/metrics\.py|metrics_utils|_record_errors_and_metrics"),
        ("pickling", r"cloudpickle|serialization\.py|\bpickle"),
        ("rayfleet codecs and checks", r"rayfleet/platform/(protocol|ingress/codec)"),
        ("rayfleet batching", r"rayfleet/platform/serving/(batcher|stacking)"),
        ("rayfleet direct channel", r"rayfleet/platform/serving/channel/"),
        ("rayfleet other", r"rayfleet/"),
        ("Serve handle routing", r"ray/serve/_private/(router|request_router)"),
        ("gRPC", r"grpc/"),
        ("thread hand-off", r"concurrent/futures/thread\.py|asyncio/threads\.py"),
        ("HTTP server (uvicorn, Starlette)", r"uvicorn/|starlette/|http_util\.py"),
        ("Serve replica machinery", r"ray/serve/"),
        ("asyncio", r"asyncio/"),
    )
)
WAITING = re.compile(r"^(Thread\.run|Worker\.main_loop|_worker) ")
OTHER = "other Python"


def categorise(stack: str) -> str:
    """The category of one sampled stack (frames root first, ``;``-joined)."""
    frames = stack.split(";")
    if WAITING.match(frames[-1]):
        return "waiting in C (not attributable)"
    for frame in reversed(frames):
        for name, pattern in CATEGORIES:
            if pattern.search(frame):
                return name
    return OTHER


def shares(raw: Path) -> Counter[str]:
    """Samples per category from py-spy's ``--format raw`` output."""
    counts: Counter[str] = Counter()
    for line in raw.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if stack:
            counts[categorise(stack)] += int(n)
    return counts


def sample(pid: int, seconds: float, out: Path) -> subprocess.Popen[bytes]:
    """Start py-spy on ``pid`` (active threads only, 250 samples/s)."""
    command = [
        str(Path(sys.executable).with_name("py-spy")),
        "record",
        "--pid",
        str(pid),
        "--duration",
        f"{seconds:g}",
        "--rate",
        "250",
        "--format",
        "raw",
        "--nonblocking",
        "-o",
        str(out),
    ]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def profile(
    port: int, concurrency: int, seconds: float, scratch: Path
) -> tuple[LoadResult, dict[str, Counter[str]]]:
    """Load the served version at ``concurrency`` while sampling both processes."""
    rows = np.ascontiguousarray(_digits_rows())
    body, headers = digits_payloads(rows)["json"]
    result: dict[str, LoadResult] = {}
    # The load starts first and outlasts the sampling on both sides.
    loader = threading.Thread(
        target=lambda: result.setdefault(
            "load", infer_load(port, body, headers, concurrency, seconds + 4, "digits")
        )
    )
    loader.start()
    threading.Event().wait(2.0)
    samplers = {}
    for process, title in (("router", "bench:Router"), ("replica", "bench:digits:v1")):
        (pid,) = actor_pids(title)
        out = scratch / f"{process}-{concurrency}.txt"
        samplers[process] = (sample(pid, seconds, out), out)
    counts = {}
    for process, (spy, out) in samplers.items():
        _, error = spy.communicate(timeout=seconds + 60)
        if spy.returncode:
            raise RuntimeError(f"py-spy failed on the {process}: {error.decode()}")
        counts[process] = shares(out)
    loader.join()
    return result["load"], counts


def _digits_rows() -> np.ndarray:
    from rayfleet.cli.demo import digits_split

    rows: np.ndarray = digits_split()[1][:ROWS]
    return rows


def report(runs: dict[int, tuple[LoadResult, dict[str, Counter[str]]]]) -> str:
    """One table: per category, its share of each process's attributable samples."""
    columns = [(c, p) for c in runs for p in ("router", "replica")]
    names = [name for name, _ in CATEGORIES] + [OTHER]
    busy = {
        (c, p): sum(n for k, n in runs[c][1][p].items() if not k.startswith("waiting"))
        for c, p in columns
    }
    rows = [
        [name]
        + [f"{runs[c][1][p][name] / max(busy[(c, p)], 1):.0%}" for c, p in columns]
        for name in names
        if any(runs[c][1][p][name] for c, p in columns)
    ]
    rows.append(["busy samples"] + [str(busy[key]) for key in columns])
    header = ["category"] + [f"{p} c={c}" for c, p in columns]
    loads = "; ".join(
        f"c={c}: {load.rps:.0f} requests/s, p50 {load.p50_ms:.1f} ms"
        for c, (load, _) in runs.items()
    )
    return f"{markdown_table(header, rows, right=range(1, len(header)))}\n\n{loads}\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-c", "--concurrency", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--transport", choices=["handle", "direct"], default="handle")
    args = parser.parse_args()
    target = Target(
        f"rayfleet (hop to replica, {args.transport})",
        target_command("rayfleet", "--transport", args.transport, model="digits"),
        rayfleet_env(),
    )
    runs = {}
    with tempfile.TemporaryDirectory() as scratch, running(target, free_port()) as url:
        port = int(url.rsplit(":", 1)[1])
        for concurrency in args.concurrency:
            runs[concurrency] = profile(port, concurrency, args.seconds, Path(scratch))
            print(
                f"c={concurrency}: {runs[concurrency][0].rps:.0f} requests/s",
                flush=True,
            )
    table = report(runs)
    print(table)
    write_report("profile_hop.md", table)


if __name__ == "__main__":
    main()
