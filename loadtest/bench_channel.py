"""The direct channel alone, with grouped sends and without.

Measures what grouping saves where it acts, without Serve, HTTP or a model in
the way: a replica process runs a ``ChannelServer`` whose handler batches the
calls with rayfleet's ``DynamicBatcher`` and doubles them, and a router process
runs ``concurrency`` closed-loop callers through a ``DirectChannel``. Each
round starts one such pair with grouping on (the defaults of
``rayfleet/platform/serving/channel/grouping.py``) and one with it off (every
frame written at once, as before grouping: ``GROUP_MAX_FRAMES = 1``), in
alternating order, and reads both processes' CPU time per call.

Callers send back to back by default, so those answered by one batch come back
at once and call again together; ``--jitter-ms`` pauses each caller a random 0
to that many milliseconds before each call, as independent clients arrive.

    .venv/bin/python -m loadtest.bench_channel [-c 1 8 32] [--rounds 4]
        [--duration 4] [--rows 4] [--jitter-ms 0]

Prints each measurement, then a markdown table of medians with the ratios
grouped / ungrouped, and writes it to ``loadtest/out/channel.md``. Loopback only;
both processes stop at the end of each measurement.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import psutil

from loadtest.common import cpu_seconds, markdown_table, write_report
from rayfleet.platform.serving.batcher import DynamicBatcher
from rayfleet.platform.serving.channel import (
    ChannelServer,
    DirectChannel,
    Endpoint,
    grouping,
)
from rayfleet.platform.serving.service import ReplicaResult

HOST = "127.0.0.1"
MODES = {"grouped": grouping.GROUP_MAX_FRAMES, "ungrouped": 1}


@dataclass
class Measurement:
    """One pair's run at one concurrency."""

    calls_per_s: float
    router_cpu_us: float
    replica_cpu_us: float


async def _doubled(rows: list[np.ndarray]) -> Sequence[ReplicaResult]:
    return [ReplicaResult({"y": 2 * x}, 0.0, len(rows)) for x in rows]


async def _replica() -> None:
    batcher: DynamicBatcher[np.ndarray, ReplicaResult] = DynamicBatcher(
        _doubled, max_batch_size=64, max_wait_s=0.0
    )

    async def handler(
        inputs: dict[str, np.ndarray], trace: dict[str, str] | None
    ) -> ReplicaResult:
        return await batcher.submit(inputs["x"])

    server = ChannelServer(handler, HOST)
    await server.start()
    print(json.dumps(server.address()), flush=True)
    # Until the bench closes stdin.
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)


async def _router(settings: dict[str, Any]) -> None:
    address, concurrency = settings["address"], settings["concurrency"]
    duration_s, jitter_s = settings["duration_s"], settings["jitter_ms"] / 1000
    direct = DirectChannel("bench/v1", max_ongoing=max(concurrency, 1))
    direct.update([Endpoint.from_address("replica", address)])
    x = np.random.default_rng(0).random((settings["rows"], 64), dtype=np.float32)
    calls = 0

    async def caller(until: float) -> None:
        nonlocal calls
        rng = random.Random()
        while time.monotonic() < until:
            if jitter_s:
                await asyncio.sleep(rng.uniform(0, jitter_s))
            await direct.infer({"x": x})
            calls += 1

    # Warm: the connection opens and both processes reach their steady state.
    await asyncio.gather(*(caller(time.monotonic() + 0.5) for _ in range(concurrency)))
    calls = 0
    # The bench reads the replica's CPU from here.
    print("MEASURING", flush=True)
    cpu = time.process_time()
    started = time.monotonic()
    await asyncio.gather(*(caller(started + duration_s) for _ in range(concurrency)))
    elapsed = time.monotonic() - started
    cpu_s = time.process_time() - cpu
    print(json.dumps({"calls": calls, "elapsed": elapsed, "cpu": cpu_s}), flush=True)
    direct.close()


def _spawn(*args: str, max_frames: int) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "loadtest.bench_channel", *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "BENCH_CHANNEL_MAX_FRAMES": str(max_frames)},
    )


def measure(mode: str, concurrency: int, args: argparse.Namespace) -> Measurement:
    """One replica process and one router process with ``mode``'s grouping."""
    max_frames = MODES[mode]
    replica = _spawn("--serve", max_frames=max_frames)
    processes = [replica]
    try:
        assert replica.stdout is not None
        settings = {
            "address": json.loads(replica.stdout.readline()),
            "concurrency": concurrency,
            "duration_s": args.duration,
            "rows": args.rows,
            "jitter_ms": args.jitter_ms,
        }
        router = _spawn("--call", json.dumps(settings), max_frames=max_frames)
        processes.append(router)
        assert router.stdout is not None
        replica_process = psutil.Process(replica.pid)
        if router.stdout.readline().strip() != "MEASURING":
            raise RuntimeError(f"the {mode} router failed before measuring")
        before = cpu_seconds(replica_process)
        out, _ = router.communicate(timeout=args.duration + 60)
        after = cpu_seconds(replica_process)
        if router.returncode != 0 or not out.strip():
            raise RuntimeError(f"the {mode} router failed (exit {router.returncode})")
        report = json.loads(out.strip().splitlines()[-1])
        replica.communicate(timeout=10)
    finally:
        # A hung or failed run leaves no process behind.
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()
    # Both CPU figures cover the measured window (the replica's also the
    # router's final report and exit, a few milliseconds).
    replica_cpu = after - before
    calls = max(report["calls"], 1)
    return Measurement(
        calls_per_s=report["calls"] / report["elapsed"],
        router_cpu_us=report["cpu"] / calls * 1e6,
        replica_cpu_us=replica_cpu / calls * 1e6,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--call", help=argparse.SUPPRESS)
    parser.add_argument("-c", "--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--duration", type=float, default=4.0)
    parser.add_argument("--rows", type=int, default=4)
    parser.add_argument("--jitter-ms", type=float, default=0.0)
    args = parser.parse_args()
    if "BENCH_CHANNEL_MAX_FRAMES" in os.environ:
        grouping.GROUP_MAX_FRAMES = int(os.environ["BENCH_CHANNEL_MAX_FRAMES"])
    if args.serve:
        asyncio.run(_replica())
        return
    if args.call:
        asyncio.run(_router(json.loads(args.call)))
        return
    results: dict[tuple[str, int], list[Measurement]] = {}
    for round_ in range(args.rounds):
        order = list(MODES) if round_ % 2 == 0 else list(reversed(MODES))
        for concurrency in args.concurrency:
            for mode in order:
                m = measure(mode, concurrency, args)
                results.setdefault((mode, concurrency), []).append(m)
                print(
                    f"round {round_} {mode} c={concurrency}: "
                    f"{m.calls_per_s:.0f} calls/s, CPU per call: router "
                    f"{m.router_cpu_us:.0f} us, replica {m.replica_cpu_us:.0f} us",
                    flush=True,
                )
    header = [
        "c",
        "calls/s grouped / ungrouped",
        "ratio",
        "router CPU us/call grouped / ungrouped",
        "replica CPU us/call grouped / ungrouped",
    ]
    lines: list[list[str]] = []
    for concurrency in args.concurrency:

        def median(mode: str, field: str, c: int = concurrency) -> float:
            return float(
                statistics.median(getattr(m, field) for m in results[(mode, c)])
            )

        g_rps, u_rps = (
            median("grouped", "calls_per_s"),
            median("ungrouped", "calls_per_s"),
        )
        lines.append(
            [
                str(concurrency),
                f"{g_rps:.0f} / {u_rps:.0f}",
                f"{g_rps / u_rps:.2f}x",
                f"{median('grouped', 'router_cpu_us'):.0f} / "
                f"{median('ungrouped', 'router_cpu_us'):.0f}",
                f"{median('grouped', 'replica_cpu_us'):.0f} / "
                f"{median('ungrouped', 'replica_cpu_us'):.0f}",
            ]
        )
    write_report("channel.md", markdown_table(header, lines, right={0}))


if __name__ == "__main__":
    main()
