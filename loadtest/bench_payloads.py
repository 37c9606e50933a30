"""What each wire format costs for image batches: JSON, binary v2, Arrow, gRPC.

Two measurements in one run, on the image CNN (``image/v1``, FP32 images of
3 x 224 x 224):

1. Peak memory per request, in this process. An 8-image batch goes through the
   router's own code over the model loaded in-process (InProcessBackend): the HTTP
   app called as an ASGI app with the body in one piece, and the router's gRPC
   method with the serialized message, as Serve's gRPC server hands it over.
   ``tracemalloc`` sees every Python and numpy allocation from the body's arrival
   to the encoded answer (not onnxruntime's own, the same for every format). The
   router observes every request here (validation ``sample_rate`` 1), its worst
   case: the observation's summary of the first image is part of each peak.
2. Load against a rayfleet app this script starts (router plus an image replica,
   rayfleet's Serve environment, gRPC on its own port): batches of 1 and 8 images
   in each format, closed loop at nice 19 (loadtest/loadgen.py for HTTP, a grpc.aio
   loop here for gRPC): requests/s, p50/p99, bytes on the wire per request, and CPU
   per request of the router replica and of the whole server (every process of its
   Ray, HAProxy included), read with psutil around the measured window.

    .venv/bin/python -m loadtest.bench_payloads [--duration 4] [-c 1 8]
        [--batches 1 8] [--formats json binary arrow grpc] [--memory-only]

gRPC is also sent straight to the router replica's own gRPC server ("no HAProxy"),
which shows what HAProxy's HTTP/2 relay costs. rayfleet's Serve settings
(``SERVE_ENV``) apply unless this environment sets one: e.g. Serve's own HTTP/2
defaults, ``RAY_SERVE_HAPROXY_TUNE_BUFSIZE=16384
RAY_SERVE_HAPROXY_H2_MAX_FRAME_SIZE=16384
RAY_SERVE_HAPROXY_H2_FE_INITIAL_WINDOW_SIZE=65536
RAY_SERVE_HAPROXY_H2_BE_INITIAL_WINDOW_SIZE=65536``, measure what rayfleet's
larger frames and windows buy.

Prints markdown tables and writes them to loadtest/out/payloads.md. Loopback only;
the server is stopped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import grpc
import httpx
import numpy as np
import psutil
import tritonclient.grpc as triton_grpc
from tritonclient.utils import InferenceServerException

from loadtest.bench_peers import (
    OUT,
    STORE,
    Server,
    ensure_image_model,
    free_port,
    rayfleet_env,
    serving,
    v2_request,
)
from loadtest.loadgen import LoadResult, run_load
from loadtest.targets import bench_args
from rayfleet.platform.config.spec import parse_spec
from rayfleet.platform.config.store import ModelStore
from rayfleet.platform.ingress.grpc import GrpcInference
from rayfleet.platform.ingress.http import build_http_app
from rayfleet.platform.protocol import ARROW_CONTENT_TYPE, encode_arrow_request
from rayfleet.platform.protocol.grpc_codec import encode_infer_request
from rayfleet.platform.serving.buffer import ObservationBuffer
from rayfleet.platform.serving.inprocess import InProcessBackend, load_runtimes
from rayfleet.platform.serving.service import InferenceService
from rayfleet.platform.validation.observation import summarize_inputs

MODEL_INFER = "/inference.GRPCInferenceService/ModelInfer"
FORMATS = ("json", "binary", "arrow", "grpc")


@dataclass(frozen=True)
class Payload:
    """One request body in one format, and how to send it."""

    format: str
    body: bytes
    headers: dict[str, str]


def payloads(images: np.ndarray) -> dict[str, Payload]:
    """The same request in every format, as their usual clients build it."""
    built: dict[str, Payload] = {}
    for name, binary in (("json", False), ("binary", True)):
        built[name] = Payload(name, *v2_request(images, binary))
    built["arrow"] = Payload(
        "arrow",
        encode_arrow_request({"image": images}),
        {"content-type": ARROW_CONTENT_TYPE},
    )
    message = encode_infer_request("image", {"image": images})
    built["grpc"] = Payload("grpc", message.SerializeToString(), {})
    return built


# --- peak memory per request, in-process --------------------------------------


class _Context:
    """The part of Serve's gRPC context the router's methods use."""

    def __init__(self) -> None:
        self.code: Any = None
        self.details = ""

    def set_code(self, code: Any) -> None:
        self.code = code

    def set_details(self, details: str) -> None:
        self.details = details

    def invocation_metadata(self) -> list[tuple[str, str]]:
        return []


class _InProcessRouter(GrpcInference):
    """The router's gRPC methods over an in-process service."""

    def __init__(self, service: InferenceService) -> None:
        self.service = service


def _in_process_service() -> InferenceService:
    args = bench_args(str(STORE), model="image")
    args["validation"]["sample_rate"] = 1.0
    spec = parse_spec(args)
    store = ModelStore(spec.store)
    manifests = {"image": {"v1": store.manifest("image", "v1")}}
    runtimes = load_runtimes(spec, manifests, placement=None)
    # With the router's own recorder, so each request's observation is counted.
    return InferenceService(
        spec, manifests, InProcessBackend(runtimes), recorder=ObservationBuffer(100)
    )


async def _asgi_post(app: Any, payload: Payload) -> bytes:
    """One POST through the ASGI app, the body arriving in one piece."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/v2/models/image/infer",
        "raw_path": b"/v2/models/image/infer",
        "root_path": "",
        "query_string": b"",
        "headers": [
            (b"content-length", str(len(payload.body)).encode()),
            *((k.encode(), v.encode()) for k, v in payload.headers.items()),
        ],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
    }
    delivered = False
    status = 0
    chunks: list[bytes] = []

    async def receive() -> dict[str, Any]:
        nonlocal delivered
        if delivered:
            return {"type": "http.disconnect"}
        delivered = True
        return {"type": "http.request", "body": payload.body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
        elif message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))

    await app(scope, receive, send)
    body = b"".join(chunks)
    if status != 200:
        raise RuntimeError(f"{payload.format}: HTTP {status}: {body[:200]!r}")
    return body


async def _grpc_call(router: _InProcessRouter, payload: Payload) -> bytes:
    """One ModelInfer, handed the serialized request as Serve's gRPC server hands
    it to the router; answered and serialized."""
    context = _Context()
    reply = await router.ModelInfer(payload.body, context)
    if context.code is not None:
        raise RuntimeError(f"grpc: {context.code}: {context.details}")
    wire: bytes = reply.SerializeToString()
    return wire


@dataclass(frozen=True)
class MemoryRow:
    """Peak memory of one request in one format."""

    format: str
    request_bytes: int
    response_bytes: int
    peak_bytes: int


def measure_memory(images: np.ndarray) -> list[MemoryRow]:
    """Peak memory of one request per format, through the router's code."""
    service = _in_process_service()
    app = build_http_app(service)
    router = _InProcessRouter(service)

    async def once(payload: Payload) -> bytes:
        if payload.format == "grpc":
            return await _grpc_call(router, payload)
        return await _asgi_post(app, payload)

    rows = []
    for payload in payloads(images).values():
        asyncio.run(once(payload))  # warm: first-call caches are not per request
        gc.collect()
        tracemalloc.start()
        base = tracemalloc.get_traced_memory()[0]
        response = asyncio.run(once(payload))
        peak = tracemalloc.get_traced_memory()[1] - base
        tracemalloc.stop()
        rows.append(MemoryRow(payload.format, len(payload.body), len(response), peak))
    return rows


def summary_peak(images: np.ndarray) -> int:
    """Peak memory of the observation summary the router makes of a request."""
    tracemalloc.start()
    summarize_inputs({"image": images})
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak


def memory_table(rows: list[MemoryRow], tensor_bytes: int, summary: int) -> str:
    lines = [
        f"Peak memory per request, 8 x 3 x 224 x 224 FP32 "
        f"({tensor_bytes / 1e6:.1f} MB tensor), router code in-process:",
        "",
        "| format | request bytes | response bytes | peak MB beyond the body "
        "| peak / tensor |",
        "|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row.format} | {row.request_bytes:,} | {row.response_bytes:,} "
            f"| {row.peak_bytes / 1e6:.2f} | {row.peak_bytes / tensor_bytes:.2f}x |"
        )
    lines += [
        "",
        f"Of each peak, {summary / 1e6:.2f} MB is the observation's summary of the "
        "first image (float64 statistics); the rest is the format's own cost.",
    ]
    return "\n".join(lines) + "\n"


# --- load --------------------------------------------------------------------------


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
            times = process.cpu_times()
            return float(times.user + times.system)
        return 0.0

    root = psutil.Process(server_pid)
    tree = [root, *root.children(recursive=True)]
    return used(psutil.Process(router_pid)), sum(used(p) for p in tree)


def _load_main(argv: list[str]) -> None:
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
        [
            sys.executable,
            "-m",
            "loadtest.targets",
            "rayfleet",
            "--store",
            str(STORE),
            "--port",
            "{port}",
            "--model",
            "image",
            "--grpc-port",
            str(grpc_port),
        ],
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


def load_table(rows: list[LoadRow]) -> str:
    json_rps = {
        (r.batch, r.result.concurrency): r.result.rps
        for r in rows
        if r.format == "json"
    }
    lines = [
        "| images/request | format | c | requests/s | images/s | p50 / p99 ms "
        "| vs JSON | request bytes | response bytes | router CPU ms/req "
        "| server CPU ms/req | errors |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        base = json_rps.get((r.batch, r.result.concurrency))
        ratio = f"{r.result.rps / base:.2f}x" if base else ""
        errors = sum(r.result.errors.values())
        lines.append(
            f"| {r.batch} | {r.format} | {r.result.concurrency} | {r.result.rps:.1f} "
            f"| {r.result.rps * r.batch:.0f} "
            f"| {r.result.p50_ms:.1f} / {r.result.p99_ms:.1f} | {ratio} "
            f"| {r.request_bytes:,} | {r.response_bytes:,} | {r.router_cpu_ms:.2f} "
            f"| {r.server_cpu_ms:.2f} | {errors} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    if sys.argv[1:2] == ["load"]:
        _load_main(sys.argv[2:])
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=float, default=4.0)
    parser.add_argument("-c", "--concurrency", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--formats", nargs="+", choices=FORMATS, default=list(FORMATS))
    parser.add_argument(
        "--memory-only", action="store_true", help="skip the load measurements"
    )
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    ensure_image_model()
    from rayfleet.cli.demo import image_batch

    images = image_batch(8)
    memory = memory_table(measure_memory(images), images.nbytes, summary_peak(images))
    print(memory, flush=True)
    report = memory
    if not args.memory_only:
        rows = measure_load(args.batches, args.concurrency, args.duration, args.formats)
        report += "\n" + load_table(rows)
    (OUT / "payloads.md").write_text(report)
    print(report)


if __name__ == "__main__":
    main()
