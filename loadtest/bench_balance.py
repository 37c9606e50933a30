"""How evenly requests spread over four replicas, from the replicas' own counters.

Two layouts of the digits model (4 rows a request), each under uniform closed-loop
load from loadtest/loadgen.py at nice 19:

- ``version replicas``: one router, four replicas of the version one hop away;
  Serve's router picks a replica by power of two choices on queue length.
- ``router replicas``: the version placed in the router, four router replicas;
  HAProxy spreads the connections.

Counts come from ``rayfleet_replica_requests`` in ``/metrics`` (what each replica
says it took), read before and after each run.

    .venv/bin/python -m loadtest.bench_balance [--duration 10] [-c 8 32]

Prints a markdown table (busiest / least busy replica, target <= 1.5) and writes it
to loadtest/out/balance.md. Loopback only; every server is stopped at the end.
"""

from __future__ import annotations

import argparse
import time

import httpx
import numpy as np

from loadtest.bench_overhead import ROWS, Target, digits_payloads, running
from loadtest.common import (
    OUT,
    ensure_digits_store,
    markdown_row,
    markdown_table,
    write_report,
)
from loadtest.loadgen import infer_load
from loadtest.servers import target_command
from rayfleet.deployments.serve_env import SERVE_ENV
from rayfleet.platform.rollout.telemetry import replica_requests
from rayfleet.platform.serving.counters import balance_ratio

__all__ = ["main", "requests_by_replica"]

# Replicas report every 5 s by default: wait for one more report after a run.
REPORT_WAIT_S = 6.0


def requests_by_replica(url: str) -> dict[str, float]:
    """Requests per replica of digits/v1, as ``/metrics`` shows them now."""
    return replica_requests(
        httpx.get(f"{url}/metrics", timeout=10).text, "digits", "v1"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("-c", "--concurrency", type=int, nargs="+", default=[8, 32])
    parser.add_argument("--port", type=int, default=18124)
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    ensure_digits_store()
    from rayfleet.cli.demo import digits_split

    rows = np.ascontiguousarray(digits_split()[1][:ROWS])
    body, headers = digits_payloads(rows)["binary"]
    env = {"RAY_SERVE_LOG_TO_STDERR": "0", **SERVE_ENV}
    layouts = [
        Target(
            "version replicas",
            target_command("rayfleet", "--replicas", "4", model="digits"),
            env,
            ("binary",),
        ),
        Target(
            "router replicas",
            target_command(
                "rayfleet", "--placement", "router", "--routers", "4", model="digits"
            ),
            env,
            ("binary",),
        ),
    ]
    lines = []
    for target in layouts:
        with running(target, args.port) as url:
            # Every replica must have reported once before the first count.
            time.sleep(REPORT_WAIT_S)
            for concurrency in args.concurrency:
                before = requests_by_replica(url)
                result = infer_load(
                    args.port, body, headers, concurrency, args.duration, "digits"
                )
                time.sleep(REPORT_WAIT_S)
                after = requests_by_replica(url)
                served = sorted(int(after[r] - before.get(r, 0.0)) for r in after)
                ratio = balance_ratio(served)
                cells = [
                    target.name,
                    str(concurrency),
                    f"{result.rps:.0f}",
                    " / ".join(map(str, served)),
                    "n/a" if ratio is None else f"{ratio:.2f}",
                ]
                print(markdown_row(cells), flush=True)
                lines.append(cells)
    header = ["layout", "c", "req/s", "requests per replica", "busiest / least"]
    write_report("balance.md", markdown_table(header, lines, right={1, 2, 4}) + "\n")


if __name__ == "__main__":
    main()
