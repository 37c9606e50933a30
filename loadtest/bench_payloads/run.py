"""Measurement 2: every format at every batch size and concurrency against one
rayfleet app (router plus an image replica, gRPC on its own port, and the router
replica's own gRPC server straight, without HAProxy)."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass

import grpc
import httpx
import psutil
import tritonclient.grpc as triton_grpc
from tritonclient.utils import InferenceServerException

from loadtest.bench_payloads.profile import FORMATS, MODEL_INFER, Payload, payloads
from loadtest.common import OUT, free_port
from loadtest.loadgen import LoadResult
from loadtest.servers import Server, rayfleet_env, serving, target_command

__all__ = ["LoadRow", "measure_load"]


@dataclass(frozen=True)
class LoadRow:
    """One format at one batch size and concurrency."""

    batch: int
    format: str
    result: LoadResult
    request_bytes: int
    response_bytes: int
    router_cpu_ms: float
    server_cpu_ms: float


def _load(
    payload: Payload,
    target: str,
    concurrency: int,
    duration_s: float,
    pids: tuple[int, int],
) -> tuple[LoadResult, float, float]:
    with tempfile.NamedTemporaryFile(dir=OUT, delete=False) as file:
        file.write(payload.body)
    command = [
        sys.executable,
        "-m",
        "loadtest.bench_payloads",
        "load",
        payload.format,
        target,
        file.name,
        "-c",
        str(concurrency),
        "-d",
        str(duration_s),
        "--router-pid",
        str(pids[0]),
        "--server-pid",
        str(pids[1]),
    ]
    for key, value in payload.headers.items():
        command += ["--header", f"{key}={value}"]
    try:
        output = subprocess.run(
            command,
            check=True,
            capture_output=True,
            text=True,
            timeout=duration_s + 120,
        ).stdout
    finally:
        os.unlink(file.name)
    measured = json.loads(output.strip().splitlines()[-1])
    result = LoadResult(**measured["result"])
    return result, measured["router_cpu_s"], measured["server_cpu_s"]


def _response_bytes(payload: Payload, http_url: str, grpc_target: str) -> int:
    """Size of one answer on the wire (body or message, not framing)."""
    if payload.format == "grpc":
        with grpc.insecure_channel(grpc_target) as channel:
            reply: bytes = channel.unary_unary(MODEL_INFER)(payload.body, timeout=60)
            return len(reply)
    response = httpx.post(http_url, content=payload.body, headers=payload.headers)
    response.raise_for_status()
    return len(response.content)


def _wait_for_grpc(target: str, timeout_s: float = 60) -> None:
    """Until the gRPC port answers: it may open a moment after the HTTP one."""
    deadline = time.monotonic() + timeout_s
    with triton_grpc.InferenceServerClient(target) as client:
        while True:
            with contextlib.suppress(InferenceServerException):
                if client.is_server_ready():
                    return
            if time.monotonic() > deadline:
                raise RuntimeError(f"gRPC on {target} never became ready")
            time.sleep(0.5)


def _direct_grpc_port(router_pid: int) -> int:
    """The port of the router replica's own v2 gRPC server: the one of its
    listening ports (40000 up by default) that answers ServerLive."""
    for connection in psutil.Process(router_pid).net_connections("tcp"):
        if connection.status != psutil.CONN_LISTEN:
            continue
        port = int(connection.laddr.port)
        with (
            triton_grpc.InferenceServerClient(f"127.0.0.1:{port}") as client,
            contextlib.suppress(InferenceServerException),
        ):
            if client.is_server_live(client_timeout=5):
                return port
    raise RuntimeError("the router replica serves no gRPC of its own")


def _router_pid(server_pid: int) -> int:
    for process in psutil.Process(server_pid).children(recursive=True):
        with contextlib.suppress(psutil.Error):
            if "ServeReplica:bench:Router" in " ".join(process.cmdline()):
                return process.pid
    raise RuntimeError("no router replica among the server's processes")


def measure_load(
    batches: list[int],
    levels: list[int],
    duration_s: float,
    formats: Sequence[str] = FORMATS,
) -> list[LoadRow]:
    """Every format at every batch size and concurrency, against one rayfleet."""
    from rayfleet.cli.demo import image_batch

    port, grpc_port = free_port(), free_port()
    server = Server(
        "rayfleet (payloads)",
        target_command("rayfleet", "--grpc-port", str(grpc_port)),
        rayfleet_env(),
    )
    http_url = f"http://127.0.0.1:{port}/v2/models/image/infer"
    grpc_target = f"127.0.0.1:{grpc_port}"
    rows = []
    with serving(server, port) as process:
        _wait_for_grpc(grpc_target)
        pids = (_router_pid(process.pid), process.pid)
        # Also straight to the router replica's own gRPC server, to show what
        # HAProxy's HTTP/2 relay costs.
        direct = f"127.0.0.1:{_direct_grpc_port(pids[0])}"
        targets = {
            "json": [("json", http_url)],
            "binary": [("binary", http_url)],
            "arrow": [("arrow", http_url)],
            "grpc": [("grpc", grpc_target), ("grpc, no HAProxy", direct)],
        }
        for batch in batches:
            for payload in payloads(image_batch(batch)).values():
                if payload.format not in formats:
                    continue
                response_bytes = _response_bytes(payload, http_url, grpc_target)
                for label, target in targets[payload.format]:
                    for concurrency in levels:
                        result, router_s, server_s = _load(
                            payload, target, concurrency, duration_s, pids
                        )
                        row = LoadRow(
                            batch,
                            label,
                            result,
                            len(payload.body),
                            response_bytes,
                            router_s * 1000 / max(result.requests, 1),
                            server_s * 1000 / max(result.requests, 1),
                        )
                        rows.append(row)
                        print(
                            f"batch {batch} {label:16} c={concurrency:<3} "
                            f"{result.rps:7.1f} rps  p50 {result.p50_ms:7.2f} ms  "
                            f"p99 {result.p99_ms:7.2f} ms  router "
                            f"{row.router_cpu_ms:.2f} CPU-ms/req  "
                            f"errors {result.errors}",
                            flush=True,
                        )
    return rows
