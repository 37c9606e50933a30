"""More requests in flight than one replica takes: where should they wait?

The image CNN (one image a request, binary v2) on one replica one hop from the
router, driven past the replica's ``max_ongoing_requests`` by closed-loop clients
at nice 19. Each variant is its own server, run side by side in one invocation:

- ``queue at the router``: a small ``max_ongoing_requests`` (2 unbatched, 32
  with batching 16: twice the autoscaling target). Requests beyond it wait in the
  router's Serve handle, which retries full replicas with exponential backoff
  (25 ms doubling to 500 ms).
- ``queue at the router, short backoff``: the same, with Serve's router retrying
  every 1-10 ms instead.
- ``queue in the replica``: ``max_ongoing_requests`` 256, so the router sends at
  once and requests wait in the replica for the model (or the next batch).

    .venv/bin/python -m loadtest.bench_overload [--duration 5] [-c 8 32 64]
        [--only SUBSTRING ...]

Prints a markdown table (images/s, p50/p99, errors) and writes it to
loadtest/out/overload.md. Loopback only; every server is stopped at the end.
"""

from __future__ import annotations

import argparse

from loadtest.common import (
    OUT,
    ensure_image_model,
    markdown_row,
    markdown_table,
    write_report,
)
from loadtest.loadgen import v2_request
from loadtest.servers import Server, load_each, rayfleet_env, target_command

__all__ = ["main", "servers"]

SHORT_BACKOFF = {
    "RAY_SERVE_ROUTER_RETRY_INITIAL_BACKOFF_S": "0.001",
    "RAY_SERVE_ROUTER_RETRY_MAX_BACKOFF_S": "0.01",
}


def servers() -> list[Server]:
    """Every variant, unbatched and with batching 16."""
    out = []
    for batching, batch_args, router_limit in (
        ("no batching", ["--max-batch-size", "1"], 2),
        ("batching 16", ["--max-batch-size", "16"], 32),
    ):
        at_router = target_command("rayfleet", *batch_args, "--max-ongoing-requests")
        out += [
            Server(
                f"{batching}, queue at the router",
                [*at_router, str(router_limit)],
                # Fresh HAProxy ports for each server: the last one's may linger.
                rayfleet_env(),
            ),
            Server(
                f"{batching}, queue at the router, short backoff",
                [*at_router, str(router_limit)],
                {**rayfleet_env(), **SHORT_BACKOFF},
            ),
            Server(
                f"{batching}, queue in the replica", [*at_router, "256"], rayfleet_env()
            ),
        ]
    return out


def main() -> None:
    """Every variant at every concurrency, one server at a time."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("-c", "--concurrency", type=int, nargs="+", default=[8, 32, 64])
    parser.add_argument("--only", nargs="*", help="substrings of server names to run")
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    ensure_image_model()
    from rayfleet.cli.demo import image_batch

    body, headers = v2_request(image_batch(1), binary=True)
    lines = []
    measured = load_each(
        servers(), args.only, args.concurrency, body, headers, args.duration
    )
    for server, result in measured:
        cells = [
            server.name,
            str(result.concurrency),
            f"{result.rps:.0f}",
            f"{result.p50_ms:.1f}",
            f"{result.p99_ms:.1f}",
            str(sum(result.errors.values()) or ""),
        ]
        print(markdown_row(cells), flush=True)
        lines.append(cells)
    header = ["variant", "c", "images/s", "p50 ms", "p99 ms", "errors"]
    write_report(
        "overload.md", markdown_table(header, lines, right={1, 2, 3, 4}) + "\n"
    )


if __name__ == "__main__":
    main()
