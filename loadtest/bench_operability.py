"""What operability costs: the request log and tracing against neither, interleaved.

One Ray and one Serve with rayfleet's Serve settings. Each variant is its own
rayfleet application on its own route prefix, serving digits v1 in the router
(where per-request work shows most; 4 rows a request, v2 JSON). Rounds take the
variants in turn, rotating who goes first, with one load generator
(loadtest/loadgen.py at nice 19, closed loop): each variant's requests/s is
compared with the baseline's of the same round, so the machine's drift between
rounds cancels out.

    .venv/bin/python -m loadtest.bench_operability [--rounds 5] [--duration 5] [-c 32]

Variants: ``off`` (the defaults: request log and tracing off), ``request log
10%`` (Parquet parts into a scratch copy of the store), and ``tracing 100%``,
``10%`` and ``1%`` (that share of requests traced and exported over OTLP/HTTP to
a sink in this process, which reads and drops what it gets), and ``validation
off`` (no observations and no Validator: ``off`` observes every request, as
shipped, so validation on against off is the inverse of its ratio). Prints a markdown
table of the median ratio, the interval that holds it at 90% (from five rounds;
loadtest/rounds.py) and its range per variant, and the CPU time the
variant's router and Validator processes spent per request (median over rounds;
CPU time, unlike requests/s, barely moves with a busy neighbour), and writes it to
loadtest/out/operability.md.
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import statistics
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import numpy as np

from loadtest.bench_overhead import ROWS, digits_payloads
from loadtest.common import (
    OUT,
    STORE,
    actor_pids,
    cpu_seconds,
    ensure_digits_store,
    free_port,
    http_in_thread,
    markdown_table,
    write_report,
)
from loadtest.loadgen import LoadResult, run_load_subprocess
from loadtest.rounds import ratio_cell
from loadtest.targets import bench_args

__all__ = ["VARIANTS", "main"]

Edit = Callable[[dict[str, Any], str], None]


def _off(args: dict[str, Any], sink: str) -> None:
    del args, sink


def _request_log(args: dict[str, Any], sink: str) -> None:
    del sink
    args["request_log"] = {"enabled": True, "sample_rate": 0.1, "flush_every_s": 5}


def _no_validation(args: dict[str, Any], sink: str) -> None:
    del sink
    args["observations"] = {"enabled": False}


def _tracing(rate: float) -> Edit:
    def edit(args: dict[str, Any], sink: str) -> None:
        args["tracing"] = {
            "enabled": True,
            "sample_rate": rate,
            "otlp_endpoint": sink,
        }

    return edit


# The first is the baseline every other is compared with.
VARIANTS: dict[str, Edit] = {
    "off": _off,
    # The same app as the baseline, served again: how far apart two identical
    # applications measure, the floor under every other ratio here.
    "off, again": _off,
    "request log 10%": _request_log,
    "tracing 100%": _tracing(1.0),
    "tracing 10%": _tracing(0.1),
    "tracing 1%": _tracing(0.01),
    # The baseline observes every request; this one runs no Validator at all.
    "validation off": _no_validation,
}


class _Sink(BaseHTTPRequestHandler):
    """An OTLP/HTTP collector that reads each export and drops it."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length", 0)))
        self.send_response(200)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        del format, args


@contextmanager
def otlp_sink() -> Iterator[str]:
    """An OTLP/HTTP traces endpoint on loopback for as long as the block runs."""
    with http_in_thread(_Sink) as port:
        yield f"http://127.0.0.1:{port}/v1/traces"


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in name).strip("-")


# The processes whose CPU time a variant's requests cost: its own router and
# Validator (every variant is an application of its own).
ROLES = ("Router", "Validator")


def _cpu_s(app: str) -> dict[str, float]:
    """User and system CPU seconds so far of each role's replicas of ``app``."""
    import psutil

    spent = {}
    for role in ROLES:
        total = 0.0
        for pid in actor_pids(f"ServeReplica:{app}:{role}"):
            with contextlib.suppress(psutil.Error):
                total += cpu_seconds(psutil.Process(pid))
        spent[role] = total
    return spent


def _read_cpu(readings: dict[str, dict[str, float]], app: str, edge: str) -> None:
    """Keep ``app``'s CPU seconds so far under ``edge`` of a load window."""
    readings[edge] = _cpu_s(app)


@dataclass(frozen=True)
class _Run:
    """One variant's load in one round, and what it cost its processes."""

    load: LoadResult
    cpu_us: dict[str, float]


def _serve_variants(store: str, sink: str, port: int, names: list[str]) -> None:
    import ray
    from ray import serve

    from rayfleet.deployments.app import build
    from rayfleet.deployments.serve_env import apply_serve_env

    apply_serve_env()
    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False)
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    for name in names:
        args = bench_args(store, placement="router")
        VARIANTS[name](args, sink)
        serve.run(build(args), name=_slug(name), route_prefix=f"/{_slug(name)}")


def _table(names: list[str], rounds: list[dict[str, _Run]], c: int) -> str:
    base = names[0]
    lines = []
    for name in names:
        runs = [each[name] for each in rounds]
        ratios = [each[name].load.rps / each[base].load.rps for each in rounds]
        lines.append(
            [
                name,
                f"{statistics.median(r.load.rps for r in runs):.0f}",
                f"{statistics.median(r.load.p50_ms for r in runs):.2f}",
                ratio_cell(ratios),
                f"{min(ratios):.2f}-{max(ratios):.2f}",
                *(
                    f"{statistics.median(r.cpu_us[role] for r in runs):.0f}"
                    for role in ROLES
                ),
                str(sum(sum(r.load.errors.values()) for r in runs)),
            ]
        )
    header = [
        "variant",
        f"c={c} rps (median)",
        "p50 ms (median)",
        f"vs {base}: median [90% interval]",
        "range over rounds",
        *(f"{role} CPU us/request" for role in ROLES),
        "errors",
    ]
    return markdown_table(header, lines) + "\n"


def main() -> None:
    """Serve every variant, then load them in rotating order, round after round."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("-c", "--concurrency", type=int, default=32)
    baseline, *others = VARIANTS
    parser.add_argument(
        "--only", nargs="*", default=others, help=f"variants beside {baseline}"
    )
    args = parser.parse_args()
    names = [baseline, *args.only]
    ensure_digits_store()
    from rayfleet.cli.demo import digits_split

    rows = np.ascontiguousarray(digits_split()[1][:ROWS])
    body, headers = digits_payloads(rows)["json"]
    port = free_port()
    OUT.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=OUT) as scratch, otlp_sink() as sink:
        # The request log writes under the store: a copy keeps the bench's clean.
        store = Path(scratch, "store")
        shutil.copytree(STORE / "digits", store / "digits")
        _serve_variants(str(store), sink, port, names)
        rounds: list[dict[str, _Run]] = []
        for index in range(args.rounds):
            order = names[index % len(names) :] + names[: index % len(names)]
            results = {}
            for name in order:
                url = f"http://127.0.0.1:{port}/{_slug(name)}/v2/models/digits/infer"
                readings: dict[str, dict[str, float]] = {}
                read_cpu = partial(_read_cpu, readings, _slug(name))
                # CPU read over the measured window only: the load generator's
                # start-up and warm-up would add idle seconds and uncounted
                # requests.
                load = run_load_subprocess(
                    url,
                    body,
                    headers,
                    args.concurrency,
                    args.duration,
                    scratch,
                    window=read_cpu,
                )
                before, after = readings["start"], readings["end"]
                cpu_us = {
                    role: (after[role] - before[role]) / max(load.requests, 1) * 1e6
                    for role in ROLES
                }
                results[name] = _Run(load, cpu_us)
                print(
                    f"round {index + 1} {name:16} {load.rps:7.0f} rps  "
                    f"p50 {load.p50_ms:6.2f} ms  errors {sum(load.errors.values())}  "
                    + "  ".join(f"{role} {cpu_us[role]:.0f} us" for role in ROLES),
                    flush=True,
                )
            rounds.append(results)
    table = _table(names, rounds, args.concurrency)
    print(table)
    write_report("operability.md", table)


if __name__ == "__main__":
    main()
