"""What each layer between a client and the model costs, measured side by side.

One run, one machine, one ONNX model (digits v1, 4 rows a request), one load
generator (loadtest/loadgen.py at nice 19, closed loop):

- raw onnxruntime in-process (the compute limit);
- rayfleet's HTTP app on one uvicorn process, no Ray (the HTTP limit);
- KServe 0.21 ``ModelServer`` (its own virtualenv, built here on first use);
- a bare one-deployment Serve app with default settings;
- the rayfleet router path, JSON and binary tensors, under Serve's knobs.

    .venv/bin/python -m loadtest.bench_overhead [--duration 5] [-c 1 8 32]

Prints a markdown table of requests/s and p50/p99 with ratios to KServe, and writes
it to loadtest/out/overhead.md. Loopback only; every server is stopped at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnxruntime as ort
import tritonclient.http as triton_http

from loadtest.loadgen import LoadResult, run_load_subprocess, time_loop
from loadtest.servers import ROOT, server_process
from rayfleet.deployments.serve_env import SERVE_ENV

OUT = ROOT / "loadtest" / "out"
STORE = ROOT / "build" / "bench-models"
KSERVE_VENV = ROOT / "build" / "kserve-venv"
ROWS = 4


@dataclass(frozen=True)
class Target:
    """A server to start and the payloads to send it."""

    name: str
    command: list[str]
    payloads: tuple[str, ...]
    env: dict[str, str] = field(default_factory=dict)


def _payloads(rows: np.ndarray) -> dict[str, tuple[bytes, dict[str, str]]]:
    json_body = json.dumps(
        {
            "inputs": [
                {
                    "name": "input",
                    "shape": list(rows.shape),
                    "datatype": "FP32",
                    "data": rows.flatten().tolist(),
                }
            ]
        }
    ).encode()
    infer_input = triton_http.InferInput("input", list(rows.shape), "FP32")
    infer_input.set_data_from_numpy(rows, binary_data=True)
    outputs = [
        triton_http.InferRequestedOutput(name, binary_data=True)
        for name in ("label", "probabilities")
    ]
    body, header_length = triton_http.InferenceServerClient.generate_request_body(
        [infer_input], outputs=outputs
    )
    return {
        "json": (json_body, {"content-type": "application/json"}),
        "binary": (
            body,
            {
                "content-type": "application/octet-stream",
                "inference-header-content-length": str(header_length),
            },
        ),
    }


def _ensure_models() -> None:
    if not (STORE / "digits" / "v1" / "manifest.json").exists():
        from rayfleet.cli.demo import build_demo_store

        build_demo_store(str(STORE))


def _ensure_kserve() -> Path:
    python = KSERVE_VENV / "bin" / "python"
    if not python.exists():
        print("building KServe's virtualenv (once) ...", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(KSERVE_VENV)], check=True)
        subprocess.run(
            [
                str(python),
                "-m",
                "pip",
                "install",
                "-q",
                "kserve==0.21.0",
                "onnxruntime",
                "numpy",
            ],
            check=True,
        )
    return python


def raw_onnxruntime(rows: np.ndarray, duration_s: float) -> LoadResult:
    """session.run in a loop in this process: the most the model can do."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(
        str(STORE / "digits" / "v1" / "model.onnx"), sess_options=options
    )
    feed = {"input": rows}
    for _ in range(100):
        session.run(None, feed)
    return time_loop(lambda: session.run(None, feed), duration_s)


@contextlib.contextmanager
def running(target: Target, port: int) -> Iterator[str]:
    """Start ``target`` on ``port``, wait until it answers, stop it afterwards."""
    # KServe's script takes the port as a bare argument, the others as --port.
    port_args = ["{port}"] if target.name == "kserve" else ["--port", "{port}"]
    with server_process(
        target.name,
        [*target.command, *port_args],
        target.env,
        port,
        "/v2/models/digits/ready",
        OUT,
        ready_timeout_s=180,
    ):
        yield f"http://127.0.0.1:{port}"


def targets() -> list[Target]:
    """Every server in the comparison, in table order."""
    py = [sys.executable, "-m", "loadtest.targets"]
    store = ["--store", str(STORE)]
    quiet = {"RAY_SERVE_LOG_TO_STDERR": "0"}
    fast = {**quiet, **SERVE_ENV}  # what rayfleet ships with
    return [
        Target("starlette (no Ray)", [*py, "starlette", *store], ("json", "binary")),
        Target(
            "kserve",
            [
                str(_ensure_kserve()),
                str(ROOT / "loadtest/peers/kserve_server.py"),
                str(STORE / "digits/v1/model.onnx"),
                "digits",
            ],
            ("json",),
        ),
        Target(
            "serve-bare (Serve defaults)", [*py, "serve-bare", *store], ("json",), quiet
        ),
        Target(
            "rayfleet (Serve defaults)", [*py, "rayfleet", *store], ("json",), quiet
        ),
        Target(
            "serve-bare (rayfleet's Serve env)",
            [*py, "serve-bare", *store],
            ("json",),
            fast,
        ),
        Target(
            "rayfleet (hop to replica)",
            [*py, "rayfleet", *store],
            ("json", "binary"),
            fast,
        ),
        Target(
            "rayfleet (in-router)",
            [*py, "rayfleet", *store, "--placement", "router"],
            ("json", "binary"),
            fast,
        ),
        Target(
            "rayfleet (in-router, validation off)",
            [*py, "rayfleet", *store, "--placement", "router", "--no-validation"],
            ("json", "binary"),
            fast,
        ),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("-c", "--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--only", nargs="*", help="substrings of target names to run")
    parser.add_argument("--port", type=int, default=18123)
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    _ensure_models()
    from rayfleet.cli.demo import digits_split

    rows = np.ascontiguousarray(digits_split()[1][:ROWS])
    payloads = _payloads(rows)
    results: list[tuple[str, str, LoadResult]] = []
    raw = raw_onnxruntime(rows, args.duration)
    results.append(("raw onnxruntime (in-process)", "-", raw))
    print(f"raw onnxruntime: {raw.rps:.0f} runs/s, p50 {raw.p50_ms:.3f} ms", flush=True)
    for target in targets():
        if args.only and not any(s in target.name for s in args.only):
            continue
        with running(target, args.port) as url:
            for payload in target.payloads:
                body, headers = payloads[payload]
                for concurrency in args.concurrency:
                    result = run_load_subprocess(
                        f"{url}/v2/models/digits/infer",
                        body,
                        headers,
                        concurrency,
                        args.duration,
                        str(OUT),
                    )
                    results.append((target.name, payload, result))
                    print(
                        f"{target.name:30} {payload:6} c={concurrency:<3} "
                        f"{result.rps:7.0f} rps  p50 {result.p50_ms:7.2f} ms  "
                        f"p99 {result.p99_ms:7.2f} ms  errors {result.errors}",
                        flush=True,
                    )
    table = _table(results, args.concurrency)
    (OUT / "overhead.md").write_text(table)
    print(table)


def _table(results: list[tuple[str, str, LoadResult]], levels: list[int]) -> str:
    kserve = {r.concurrency: r for name, _, r in results if name == "kserve"}
    header = "| server | payload | " + " | ".join(
        f"c={c} rps | c={c} p50 / p99 ms | c={c} vs KServe" for c in levels
    )
    lines = [header + " |", "|---|---|" + "---|---|---|" * len(levels)]
    rows: dict[tuple[str, str], dict[int, LoadResult]] = {}
    for name, payload, result in results:
        rows.setdefault((name, payload), {})[result.concurrency] = result
    for (name, payload), by_level in rows.items():
        cells = []
        for c in levels:
            r = by_level.get(c)
            if r is None:
                cells += ["", "", ""]
                continue
            base = kserve.get(c)
            ratio = f"{r.rps / base.rps:.2f}x rps" if base else ""
            errs = f" ({sum(r.errors.values())} errors)" if r.errors else ""
            cells += [f"{r.rps:.0f}{errs}", f"{r.p50_ms:.2f} / {r.p99_ms:.2f}", ratio]
        lines.append(f"| {name} | {payload} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
