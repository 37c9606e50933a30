"""The load process of measurement 2, at nice 19: one format at one concurrency,
over HTTP (loadtest/loadgen.py) or gRPC (a grpc.aio loop here), with the server's
CPU read around the measured window.

    python -m loadtest.bench_payloads load FORMAT TARGET BODY_FILE -c N -d S
        --router-pid PID --server-pid PID

prints one JSON line: the load result and the CPU seconds of the router replica
and of the whole server.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import time
from collections import Counter
from dataclasses import asdict

import grpc
import psutil

from loadtest.bench_payloads.profile import FORMATS, MODEL_INFER
from loadtest.common import cpu_seconds
from loadtest.loadgen import LoadResult, run_load

__all__ = ["load_main", "run_grpc_load"]


async def run_grpc_load(
    target: str, body: bytes, concurrency: int, duration_s: float
) -> LoadResult:
    """Closed-loop ModelInfer calls of a serialized request, ``concurrency`` at a
    time over one channel, as loadgen.run_load does over HTTP."""
    latencies: list[float] = []
    errors: Counter[str] = Counter()
    options = [
        ("grpc.max_send_message_length", -1),
        ("grpc.max_receive_message_length", -1),
    ]
    async with grpc.aio.insecure_channel(target, options=options) as channel:
        # No serializers: the request goes out as these bytes, the reply stays bytes.
        infer = channel.unary_unary(MODEL_INFER)
        stop_at = time.perf_counter() + duration_s

        async def worker() -> None:
            while time.perf_counter() < stop_at:
                started = time.perf_counter()
                try:
                    await infer(body, timeout=60)
                except grpc.aio.AioRpcError as error:
                    errors[error.code().name] += 1
                latencies.append(time.perf_counter() - started)

        began = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        seconds = time.perf_counter() - began
    return LoadResult.from_latencies(concurrency, latencies, seconds, errors)


def _cpu_seconds(router_pid: int, server_pid: int) -> tuple[float, float]:
    """CPU seconds so far of the router replica, and of the server's whole tree."""

    def used(process: psutil.Process) -> float:
        with contextlib.suppress(psutil.Error):
            return cpu_seconds(process)
        return 0.0

    root = psutil.Process(server_pid)
    tree = [root, *root.children(recursive=True)]
    return used(psutil.Process(router_pid)), sum(used(p) for p in tree)


def load_main(argv: list[str]) -> None:
    """``load``: one measured run at nice 19, CPU read around the measured window."""
    parser = argparse.ArgumentParser(prog="bench_payloads load")
    parser.add_argument("format", choices=FORMATS)
    parser.add_argument("target")
    parser.add_argument("body_file")
    parser.add_argument("--header", action="append", default=[])
    parser.add_argument("-c", "--concurrency", type=int, default=1)
    parser.add_argument("-d", "--duration", type=float, default=4.0)
    parser.add_argument("--router-pid", type=int, required=True)
    parser.add_argument("--server-pid", type=int, required=True)
    args = parser.parse_args(argv)
    os.nice(19)
    with open(args.body_file, "rb") as file:
        body = file.read()
    headers = dict(h.split("=", 1) for h in args.header)

    def run(duration_s: float) -> LoadResult:
        if args.format == "grpc":
            return asyncio.run(
                run_grpc_load(args.target, body, args.concurrency, duration_s)
            )
        return asyncio.run(
            run_load(
                args.target, body, headers, args.concurrency, duration_s, warmup_s=0
            )
        )

    run(1.0)  # warm-up, outside the CPU window
    router_before, server_before = _cpu_seconds(args.router_pid, args.server_pid)
    result = run(args.duration)
    router_after, server_after = _cpu_seconds(args.router_pid, args.server_pid)
    print(
        json.dumps(
            {
                "result": asdict(result),
                "router_cpu_s": router_after - router_before,
                "server_cpu_s": server_after - server_before,
            }
        )
    )
