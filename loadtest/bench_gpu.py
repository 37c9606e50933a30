"""The image CNN on a GPU: rayfleet's batching replicas against raw onnxruntime.

Needs a CUDA GPU, ``nvidia-smi`` and onnxruntime's CUDA build; anywhere else it
prints "no GPU: skipped" and exits 0. On a bare GPU machine, from the repo::

    python3 -m venv .venv && .venv/bin/pip install -e ".[dev]"
    .venv/bin/pip uninstall -y onnxruntime    # onnxruntime-gpu provides the module
    .venv/bin/pip install "onnxruntime-gpu[cuda,cudnn]"   # CUDA 12 + cuDNN 9 wheels
    .venv/bin/python -m loadtest.bench_gpu [--duration 8] [-c 32 64 128]

CUDA and cuDNN may come from the NVIDIA pip wheels: this process preloads them
(``onnxruntime.preload_dlls``) and the server's processes find them through
``LD_LIBRARY_PATH``. It checks that both really ran on the GPU (the session's
providers; the server's processes among nvidia-smi's compute apps).

One run, one machine (the image model is built offline, nothing is downloaded):

- raw onnxruntime-gpu (CUDAExecutionProvider) in this process, batch 32, numpy in
  and out as a server would: the compute limit;
- rayfleet: two image replicas sharing the GPU (``num_gpus`` 0.25 each) with
  dynamic batching up to 32, behind two routers; one image per request as binary
  v2 tensors, closed-loop load at nice 19 (loadtest/loadgen.py).

Prints a markdown table of images/s and p50/p99 and writes it to
loadtest/out/gpu.md. Loopback only; the server is stopped at the end.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import onnxruntime as ort
import psutil

from loadtest.common import (
    IMAGE_MODEL,
    OUT,
    ensure_image_model,
    free_port,
    markdown_table,
    write_report,
)
from loadtest.loadgen import LoadResult, infer_load, raw_onnxruntime, v2_request
from loadtest.servers import Server, rayfleet_env, serving, target_command

__all__ = ["cuda_session_loads", "gpu_name", "gpu_pids", "main", "nvidia_library_dirs"]

BATCH = 32
CUDA = "CUDAExecutionProvider"


def _nvidia_smi(query: str) -> str | None:
    """What ``nvidia-smi --QUERY --format=csv,noheader`` prints; ``None`` if it
    fails."""
    try:
        return subprocess.run(
            ["nvidia-smi", f"--{query}", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stdout
    except (subprocess.SubprocessError, OSError):
        return None


def gpu_name() -> str | None:
    """The first GPU's name when onnxruntime has CUDA and nvidia-smi answers."""
    if CUDA not in ort.get_available_providers() or shutil.which("nvidia-smi") is None:
        return None
    listed = _nvidia_smi("query-gpu=name") or ""
    names = [line.strip() for line in listed.splitlines() if line.strip()]
    return names[0] if names else None


def nvidia_library_dirs() -> list[str]:
    """The ``lib`` folders of the NVIDIA pip wheels (cuBLAS, cuDNN, ...), if any."""
    spec = importlib.util.find_spec("nvidia")
    if spec is None or spec.submodule_search_locations is None:
        return []
    return sorted(
        str(lib)
        for root in spec.submodule_search_locations
        for lib in Path(root).glob("*/lib")
    )


def gpu_pids() -> set[int]:
    """Processes holding GPU memory, as nvidia-smi lists them."""
    listed = _nvidia_smi("query-compute-apps=pid") or ""
    return {int(line) for line in listed.split() if line.strip().isdigit()}


def cuda_session_loads() -> bool:
    """Whether a session of the image model really gets the CUDA provider."""
    session = ort.InferenceSession(str(IMAGE_MODEL), providers=[CUDA])
    return session.get_providers()[0] == CUDA


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=float, default=8.0)
    parser.add_argument(
        "-c", "--concurrency", type=int, nargs="+", default=[32, 64, 128]
    )
    parser.add_argument("--num-gpus", type=float, default=0.25, help="per replica")
    parser.add_argument("--replicas", type=int, default=2)
    parser.add_argument("--routers", type=int, default=2)
    args = parser.parse_args()
    gpu = gpu_name()
    if gpu is None:
        print(
            "no GPU: skipped (needs nvidia-smi and onnxruntime-gpu's "
            f"{CUDA}; onnxruntime here has {ort.get_available_providers()})"
        )
        return
    OUT.mkdir(parents=True, exist_ok=True)
    ensure_image_model()
    from rayfleet.cli.demo import image_batch

    preload = getattr(ort, "preload_dlls", None)
    if preload is not None:
        preload()
    if not cuda_session_loads():
        sys.exit(
            f"{gpu} found, but onnxruntime's {CUDA} did not load (CUDA 12 and "
            'cuDNN 9 libraries missing?): pip install "onnxruntime-gpu[cuda,cudnn]"'
        )
    print(f"GPU: {gpu}", flush=True)
    raw = raw_onnxruntime(
        IMAGE_MODEL,
        {"image": image_batch(BATCH)},
        args.duration,
        warmup_runs=5,
        providers=[CUDA],
    )
    print(
        f"raw onnxruntime-gpu batch {BATCH}: {raw.rps * BATCH:.0f} images/s, "
        f"p50 {raw.p50_ms:.2f} ms per batch",
        flush=True,
    )
    rows: list[tuple[str, LoadResult, int]] = [
        (f"raw onnxruntime-gpu, batch {BATCH}, in-process", raw, BATCH)
    ]
    label = (
        f"rayfleet, {args.replicas} replicas x num_gpus {args.num_gpus}, "
        f"batching {BATCH}, {args.routers} routers"
    )
    server = Server(
        "rayfleet (gpu)",
        target_command(
            "rayfleet",
            "--max-batch-size",
            str(BATCH),
            "--num-gpus",
            str(args.num_gpus),
            "--replicas",
            str(args.replicas),
            "--routers",
            str(args.routers),
            "--num-cpus",
            str(max(4, args.routers + args.replicas + 2)),
        ),
        {
            **rayfleet_env(),
            "LD_LIBRARY_PATH": os.pathsep.join(
                [*nvidia_library_dirs(), os.environ.get("LD_LIBRARY_PATH", "")]
            ),
        },
    )
    body, headers = v2_request(image_batch(1), binary=True)
    port = free_port()
    with serving(server, port) as process:
        tree = {p.pid for p in psutil.Process(process.pid).children(recursive=True)}
        on_gpu = len(tree & gpu_pids())
        print(f"server processes holding GPU memory: {on_gpu}", flush=True)
        if on_gpu < args.replicas:
            label += f" (WARNING: only {on_gpu} server processes on the GPU)"
        for concurrency in args.concurrency:
            result = infer_load(port, body, headers, concurrency, args.duration)
            rows.append((label, result, 1))
            print(
                f"rayfleet c={concurrency:<3} {result.rps:7.0f} images/s  "
                f"p50 {result.p50_ms:7.2f} ms  p99 {result.p99_ms:7.2f} ms  "
                f"errors {result.errors}",
                flush=True,
            )
    write_report("gpu.md", _table(gpu, rows, raw.rps * BATCH))


def _table(gpu: str, rows: list[tuple[str, LoadResult, int]], limit: float) -> str:
    header = [
        "server",
        "c",
        "images/s",
        "p50 / p99 ms",
        "of raw onnxruntime-gpu",
        "errors",
    ]
    cells = [
        [
            name,
            str(result.concurrency),
            f"{result.rps * batch:.0f}",
            f"{result.p50_ms:.2f} / {result.p99_ms:.2f}",
            f"{result.rps * batch / limit:.0%}",
            str(sum(result.errors.values())),
        ]
        for name, result, batch in rows
    ]
    return (
        f"Image CNN on {gpu}; one image per request to rayfleet.\n\n"
        + markdown_table(header, cells)
        + "\n"
    )


if __name__ == "__main__":
    main()
