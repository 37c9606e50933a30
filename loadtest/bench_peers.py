"""rayfleet against its peers on a model that costs milliseconds: the image CNN.

One run, one machine, one ONNX model (``image/v1``, [-1, 3, 224, 224] FP32), one
image per request as binary v2 tensors, one load generator (loadtest/loadgen.py at
nice 19, closed loop), concurrency 1, 8, 32 and 64:

- raw onnxruntime in this process, at the batch size where it is fastest (the
  compute limit; the same one intra-op thread as every server's session);
- KServe 0.21 ``ModelServer`` (loadtest/peers/kserve_server.py, in the virtualenv
  bench_overhead.py builds);
- a bare one-deployment Serve app, model in the ingress replica, no batching
  (loadtest/targets.py serve-bare);
- rayfleet, router plus an image replica one hop away, with dynamic batching
  (``max_batch_size`` 16) and without (1); and with the model placed in the router
  (no hop, no batching), in one router replica and in two.

    .venv/bin/python -m loadtest.bench_peers [--duration 4] [-c 1 8 32 64]

Prints a markdown table of images/s and p50/p99 with ratios to KServe, and writes it
to loadtest/out/peers.md. Loopback only; every server is stopped at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import socket
import subprocess
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnxruntime as ort
import tritonclient.http as triton_http

from loadtest.bench_overhead import _ensure_kserve
from loadtest.loadgen import LoadResult, run_load_subprocess, time_loop
from loadtest.servers import ROOT, server_process
from rayfleet.deployments.serve_env import apply_serve_env

__all__ = [
    "IMAGE_MODEL",
    "OUT",
    "STORE",
    "Server",
    "ensure_image_model",
    "free_port",
    "image_load",
    "raw_onnxruntime",
    "rayfleet_env",
    "serving",
    "v2_request",
]

OUT = ROOT / "loadtest" / "out"
STORE = ROOT / "build" / "bench-models"
IMAGE_MODEL = STORE / "image" / "v1" / "model.onnx"


@dataclass(frozen=True)
class Server:
    """A server process: its command (``{port}`` is replaced) and environment."""

    name: str
    command: list[str]
    env: dict[str, str] = field(default_factory=dict)


def free_port() -> int:
    """A TCP port on the loopback interface that nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def ensure_image_model() -> None:
    """Build ``image/v1`` into the benchmark store unless it is there."""
    if not (STORE / "image" / "v1" / "manifest.json").exists():
        from rayfleet.cli.demo import build_image_model
        from rayfleet.platform.config.store import ModelStore

        build_image_model(ModelStore(str(STORE)))


def rayfleet_env() -> dict[str, str]:
    """The environment of a rayfleet server here: rayfleet's Serve settings (a
    value set in this process's environment wins, to measure another), plus what
    lets it run beside another Serve."""
    return {
        "RAY_SERVE_LOG_TO_STDERR": "0",
        **apply_serve_env(dict(os.environ)),
        # HAProxy's stats and metrics ports and the fallback proxy's are fixed by
        # default: another Serve in HAProxy mode on this machine (a test run)
        # would make ours fail to start.
        "RAY_SERVE_HAPROXY_STATS_PORT": str(free_port()),
        "RAY_SERVE_HAPROXY_METRICS_PORT": str(free_port()),
        "RAY_SERVE_FALLBACK_PROXY_HTTP_PORT": str(free_port()),
        "RAY_SERVE_FALLBACK_PROXY_GRPC_PORT": str(free_port()),
    }


@contextlib.contextmanager
def serving(
    server: Server, port: int, model: str = "image"
) -> Iterator[subprocess.Popen[bytes]]:
    """Start ``server`` on ``port``, wait until ``model`` is ready, stop it after.

    Yields the process; Ray's processes are its descendants.
    """
    with server_process(
        server.name,
        server.command,
        server.env,
        port,
        f"/v2/models/{model}/ready",
        OUT,
        ready_timeout_s=240,
    ) as process:
        yield process


def image_load(
    port: int, body: bytes, headers: dict[str, str], concurrency: int, duration_s: float
) -> LoadResult:
    """Closed-loop load (loadtest/loadgen.py at nice 19) on the image model of the
    server on ``port``."""
    return run_load_subprocess(
        f"http://127.0.0.1:{port}/v2/models/image/infer",
        body,
        headers,
        concurrency,
        duration_s,
        str(OUT),
    )


def raw_onnxruntime(
    path: Path, batch: int, duration_s: float, providers: Sequence[str] = ()
) -> LoadResult:
    """``session.run`` on ``batch`` images in a loop in this process; ``rps`` counts
    runs, so images/s is ``rps * batch``."""
    from rayfleet.cli.demo import image_batch

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(
        str(path),
        sess_options=options,
        providers=list(providers) or ["CPUExecutionProvider"],
    )
    feed = {"image": image_batch(batch)}
    for _ in range(5):
        session.run(None, feed)
    return time_loop(lambda: session.run(None, feed), duration_s)


def v2_request(images: np.ndarray, binary: bool) -> tuple[bytes, dict[str, str]]:
    """A v2 request for the image model, JSON or with binary tensors in and out, as
    tritonclient.http sends it."""
    infer_input = triton_http.InferInput("image", list(images.shape), "FP32")
    infer_input.set_data_from_numpy(images, binary_data=binary)
    outputs = [
        triton_http.InferRequestedOutput(name, binary_data=binary)
        for name in ("probabilities", "label")
    ]
    body, header_length = triton_http.InferenceServerClient.generate_request_body(
        [infer_input], outputs=outputs
    )
    if header_length is None:
        return body, {"content-type": "application/json"}
    return body, {
        "content-type": "application/octet-stream",
        "inference-header-content-length": str(header_length),
    }


def servers() -> list[Server]:
    """Every server in the comparison, in table order."""
    py = [sys.executable, "-m", "loadtest.targets"]
    common = ["--store", str(STORE), "--port", "{port}", "--model", "image"]
    rayfleet = [*py, "rayfleet", *common]
    # Each Ray server gets its own HAProxy ports: the last one's may linger.
    return [
        Server(
            "kserve",
            [
                str(_ensure_kserve()),
                str(ROOT / "loadtest/peers/kserve_server.py"),
                str(IMAGE_MODEL),
                "image",
                "{port}",
            ],
        ),
        Server("serve-bare", [*py, "serve-bare", *common], rayfleet_env()),
        Server("rayfleet, batching 16", rayfleet, rayfleet_env()),
        Server(
            "rayfleet, no batching",
            [*rayfleet, "--max-batch-size", "1"],
            rayfleet_env(),
        ),
        Server(
            "rayfleet, in the router",
            [*rayfleet, "--placement", "router"],
            rayfleet_env(),
        ),
        Server(
            "rayfleet, in 2 router replicas",
            [*rayfleet, "--placement", "router", "--routers", "2"],
            rayfleet_env(),
        ),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=float, default=4.0)
    parser.add_argument(
        "-c", "--concurrency", type=int, nargs="+", default=[1, 8, 32, 64]
    )
    parser.add_argument("--only", nargs="*", help="substrings of server names to run")
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    ensure_image_model()
    from rayfleet.cli.demo import image_batch

    body, headers = v2_request(image_batch(1), binary=True)
    rows: list[tuple[str, LoadResult, int]] = []
    best: tuple[LoadResult, int] | None = None
    for batch in (1, 8, 32):
        raw = raw_onnxruntime(IMAGE_MODEL, batch, args.duration)
        print(
            f"raw onnxruntime batch {batch:2}: {raw.rps * batch:6.0f} images/s, "
            f"p50 {raw.p50_ms:.2f} ms",
            flush=True,
        )
        if best is None or raw.rps * batch > best[0].rps * best[1]:
            best = (raw, batch)
    assert best is not None
    rows.append((f"raw onnxruntime (batch {best[1]}, in-process)", best[0], best[1]))
    for server in servers():
        if args.only and not any(s in server.name for s in args.only):
            continue
        port = free_port()
        with serving(server, port):
            for concurrency in args.concurrency:
                result = image_load(port, body, headers, concurrency, args.duration)
                rows.append((server.name, result, 1))
                print(
                    f"{server.name:24} c={concurrency:<3} {result.rps:7.0f} images/s "
                    f"p50 {result.p50_ms:7.2f} ms  p99 {result.p99_ms:7.2f} ms  "
                    f"errors {result.errors}",
                    flush=True,
                )
    table = _table(rows, args.concurrency)
    (OUT / "peers.md").write_text(table)
    print(table)


def _table(rows: list[tuple[str, LoadResult, int]], levels: list[int]) -> str:
    kserve = {r.concurrency: r.rps for name, r, _ in rows if name == "kserve"}
    header = "| server | " + " | ".join(
        f"c={c} images/s | c={c} p50 / p99 ms | c={c} vs KServe" for c in levels
    )
    lines = [header + " |", "|---|" + "---|---|---|" * len(levels)]
    by_server: dict[str, dict[int, tuple[LoadResult, int]]] = {}
    for name, result, batch in rows:
        by_server.setdefault(name, {})[result.concurrency] = (result, batch)
    for name, by_level in by_server.items():
        cells = []
        for c in levels:
            found = by_level.get(c) or (
                by_level.get(1) if name.startswith("raw") else None
            )
            if found is None:
                cells += ["", "", ""]
                continue
            result, batch = found
            images = result.rps * batch
            base = kserve.get(c)
            ratio = f"{images / base:.2f}x" if base else ""
            errors = f" ({sum(result.errors.values())} errors)" if result.errors else ""
            cells += [
                f"{images:.0f}{errors}",
                f"{result.p50_ms:.2f} / {result.p99_ms:.2f}",
                ratio,
            ]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
