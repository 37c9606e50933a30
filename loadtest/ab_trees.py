"""The same rayfleet target from two source trees, in alternating rounds.

A change's effect on this noisy machine shows only side by side: each round
starts the target from one tree, loads it at every concurrency, stops it, then
does the same from the other tree (the order flips every round, so neither
always runs first). Prints each measurement, then the median requests/s of
each tree, the ratio new / old per round, and the router process's CPU time
per request (the less noisy number when both trees are CPU bound), and with
``--placement replica`` the version replica's too.

    git worktree add /tmp/rf_old <commit>
    .venv/bin/python -m loadtest.ab_trees --old /tmp/rf_old [--new .] \
        [--model image] [--placement router] [--transport handle] \
        [--payload binary] [--max-batch-size 16] [-c 8 32] [--rounds 4] \
        [--duration 6]

Each tree serves from its own code (``loadtest.targets`` run with that tree as
its working directory and ``PYTHONPATH``), on this tree's benchmark store and
Serve settings. Loopback only; every server is stopped at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import psutil

from loadtest.bench_overhead import digits_payloads
from loadtest.common import (
    OUT,
    ROOT,
    actor_pids,
    cpu_seconds,
    ensure_digits_store,
    ensure_image_model,
    free_port,
)
from loadtest.loadgen import LoadResult, infer_load, v2_request
from loadtest.servers import rayfleet_env, stop_session, target_command

__all__ = ["main"]

READY_TIMEOUT_S = 240.0


@contextlib.contextmanager
def tree_target(
    tree: Path, port: int, model: str, options: list[str]
) -> Iterator[psutil.Process]:
    """``loadtest.targets rayfleet`` from ``tree``'s code on ``port``; yields
    its router's process once the target prints READY (its output goes to
    ``loadtest/out/ab-<tree>.log``)."""
    command = [
        part.replace("{port}", str(port))
        for part in target_command("rayfleet", *options, model=model)
    ]
    path = OUT / f"ab-{tree.name}.log"
    log = open(path, "wb")  # noqa: SIM115 - closed below
    process = subprocess.Popen(
        command,
        cwd=tree,
        env={**os.environ, **rayfleet_env(), "PYTHONPATH": str(tree)},
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while b"READY" not in path.read_bytes():
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the target from {tree} never served; see {path}")
            time.sleep(0.5)
        (router,) = actor_pids("bench:Router")
        yield psutil.Process(router)
    finally:
        stop_session(process)
        log.close()


def replica_column(
    replica_ms: dict[tuple[str, int], list[float]], concurrency: int
) -> str:
    """Median replica CPU, old / new; "-" when the version runs in the router."""
    old, new = replica_ms[("old", concurrency)], replica_ms[("new", concurrency)]
    if not any(old) and not any(new):
        return "-"
    return f"{statistics.median(old):.2f} / {statistics.median(new):.2f}"


def request(model: str, payload: str) -> tuple[bytes, dict[str, str]]:
    """One v2 request body for ``model``: an image, or 4 digits rows."""
    if model == "image":
        ensure_image_model()
        from rayfleet.cli.demo import image_batch

        return v2_request(image_batch(1), binary=payload == "binary")
    ensure_digits_store()
    rows = np.random.default_rng(0).random((4, 64), dtype=np.float32)
    return digits_payloads(rows)[payload]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--old", type=Path, required=True, help="the baseline tree")
    parser.add_argument("--new", type=Path, default=ROOT, help="the changed tree")
    parser.add_argument("--model", choices=["digits", "image"], default="image")
    parser.add_argument("--placement", choices=["replica", "router"], default="router")
    parser.add_argument("--transport", choices=["handle", "direct"], default="handle")
    parser.add_argument("--payload", choices=["json", "binary"], default="binary")
    parser.add_argument("--max-batch-size", type=int, default=16)
    parser.add_argument("-c", "--concurrency", type=int, nargs="+", default=[8, 32])
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--duration", type=float, default=6.0)
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    trees = {"old": args.old.resolve(), "new": args.new.resolve()}
    body, headers = request(args.model, args.payload)
    options = [
        "--placement",
        args.placement,
        "--max-batch-size",
        str(args.max_batch_size),
        "--transport",
        args.transport,
    ]
    rps: dict[tuple[str, int], list[float]] = {}
    cpu_ms: dict[tuple[str, int], list[float]] = {}
    replica_ms: dict[tuple[str, int], list[float]] = {}
    for round_ in range(args.rounds):
        order = ["old", "new"] if round_ % 2 == 0 else ["new", "old"]
        for name in order:
            port = free_port()
            with tree_target(trees[name], port, args.model, options) as router:
                replicas = [
                    psutil.Process(pid) for pid in actor_pids(f"bench:{args.model}:")
                ]
                # Warm: the first requests of a process are slow.
                infer_load(port, body, headers, 8, 2.0, args.model)
                for concurrency in args.concurrency:
                    before = cpu_seconds(router)
                    before_replicas = sum(map(cpu_seconds, replicas))
                    result: LoadResult = infer_load(
                        port, body, headers, concurrency, args.duration, args.model
                    )
                    requests = max(result.requests, 1)
                    per_request = (cpu_seconds(router) - before) / requests
                    replica_per_request = (
                        sum(map(cpu_seconds, replicas)) - before_replicas
                    ) / requests
                    key = (name, concurrency)
                    rps.setdefault(key, []).append(result.rps)
                    cpu_ms.setdefault(key, []).append(per_request * 1000)
                    replica_ms.setdefault(key, []).append(replica_per_request * 1000)
                    print(
                        f"round {round_} {name} c={concurrency}: {result.rps:.0f} "
                        f"requests/s, p50 {result.p50_ms:.1f} ms, router CPU "
                        f"{per_request * 1000:.2f} ms/request, replica CPU "
                        f"{replica_per_request * 1000:.2f} ms/request",
                        flush=True,
                    )
    print(
        "| c | old req/s | new req/s | new / old | per round "
        "| router CPU ms/request, old / new | replica CPU ms/request, old / new |"
    )
    print("|---:|---:|---:|---:|---|---|---|")
    for concurrency in args.concurrency:
        old, new = rps[("old", concurrency)], rps[("new", concurrency)]
        rounds = ", ".join(f"{b / a:.2f}" for a, b in zip(old, new, strict=True))
        print(
            f"| {concurrency} | {statistics.median(old):.0f} | "
            f"{statistics.median(new):.0f} | "
            f"{statistics.median(new) / statistics.median(old):.2f}x | {rounds} | "
            f"{statistics.median(cpu_ms[('old', concurrency)]):.2f} / "
            f"{statistics.median(cpu_ms[('new', concurrency)]):.2f} | "
            f"{replica_column(replica_ms, concurrency)} |"
        )


if __name__ == "__main__":
    main()
