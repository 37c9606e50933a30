"""What the benchmarks share that is not a server or a load: where their models and
results live, a free port, the KServe virtualenv, and markdown tables.

Only the standard library at import: the test conftests take ``free_port`` from
here and need nothing else.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import psutil

    from loadtest.loadgen import LoadResult

__all__ = [
    "IMAGE_MODEL",
    "KSERVE_VENV",
    "MLSERVER_VENV",
    "OUT",
    "ROOT",
    "STORE",
    "actor_pids",
    "cpu_seconds",
    "ensure_digits_store",
    "ensure_image_model",
    "ensure_kserve",
    "ensure_mlserver",
    "free_port",
    "http_in_thread",
    "markdown_row",
    "markdown_table",
    "versus_table",
    "write_report",
]

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "loadtest" / "out"
STORE = ROOT / "build" / "bench-models"
IMAGE_MODEL = STORE / "image" / "v1" / "model.onnx"
KSERVE_VENV = ROOT / "build" / "kserve-venv"
MLSERVER_VENV = ROOT / "build" / "mlserver-venv"


def free_port() -> int:
    """A TCP port on the loopback interface that nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def http_in_thread(handler: type[BaseHTTPRequestHandler]) -> Iterator[int]:
    """``handler`` served on a loopback port of its own, from a thread, for as
    long as the block runs; yields the port."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_port
    finally:
        server.shutdown()
        server.server_close()


def actor_pids(class_name: str) -> list[int]:
    """Pids of the live Ray actors whose class name contains ``class_name``.

    Ray titles each actor's process ``ray::<class name>`` (a method name may
    follow while it runs one), which needs no dashboard, unlike Ray's state API.
    """
    import psutil  # here, not at the top: this module imports stdlib only

    pids = []
    for process in psutil.process_iter(["cmdline", "status"]):
        words = process.info.get("cmdline") or []
        if process.info.get("status") == psutil.STATUS_ZOMBIE or not words:
            continue
        if words[0].startswith("ray::") and class_name in words[0]:
            pids.append(process.pid)
    return sorted(pids)


def cpu_seconds(process: psutil.Process) -> float:
    """User and system CPU seconds ``process`` has used so far."""
    times = process.cpu_times()
    return float(times.user + times.system)


def ensure_image_model() -> None:
    """Build ``image/v1`` into the benchmark store unless it is there."""
    if not (STORE / "image" / "v1" / "manifest.json").exists():
        from rayfleet.cli.demo import build_image_model
        from rayfleet.platform.config.store import ModelStore

        build_image_model(ModelStore(str(STORE)))


def ensure_digits_store() -> None:
    """Build the digits demo models into the benchmark store unless they are there."""
    if not (STORE / "digits" / "v1" / "manifest.json").exists():
        from rayfleet.cli.demo import build_demo_store

        build_demo_store(str(STORE))


def _ensure_venv(venv: Path, packages: Sequence[str]) -> Path:
    """The python of a peer's own virtualenv with ``packages``, built on first
    use: peers pin their own versions of fastapi, pydantic and friends."""
    python = venv / "bin" / "python"
    if not python.exists():
        print(f"building {venv.name} (once) ...", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run(
            [str(python), "-m", "pip", "install", "-q", *packages], check=True
        )
    return python


def ensure_kserve() -> Path:
    """The python of KServe's own virtualenv, built on first use."""
    return _ensure_venv(KSERVE_VENV, ["kserve==0.21.0", "onnxruntime", "numpy"])


def ensure_mlserver() -> Path:
    """The python of Seldon MLServer's own virtualenv, built on first use."""
    return _ensure_venv(MLSERVER_VENV, ["mlserver==1.7.1", "onnxruntime", "numpy"])


def markdown_row(cells: Iterable[str]) -> str:
    """One row of a markdown table."""
    return "| " + " | ".join(cells) + " |"


def markdown_table(
    header: Sequence[str],
    rows: Iterable[Sequence[str]],
    right: Collection[int] = (),
) -> str:
    """A markdown table, no newline at the end; columns numbered in ``right`` are
    aligned right."""
    rule = "|" + "".join("---:|" if i in right else "---|" for i in range(len(header)))
    return "\n".join([markdown_row(header), rule, *map(markdown_row, rows)])


def versus_table(
    labels: Sequence[str],
    rate: str,
    rows: Mapping[tuple[str, ...], Mapping[int, tuple[float, LoadResult]]],
    levels: Sequence[int],
    baseline: Mapping[int, float],
    *,
    ratio_unit: str,
    against: str = "KServe",
) -> str:
    """Servers against a baseline at each concurrency level in ``levels``.

    ``rows`` maps a row's label cells (one per name in ``labels``) to its
    ``(rate, result)`` by level; each level gets three columns: the rate (named
    ``rate``, with the errors if any), p50 / p99 ms, and the rate over
    ``baseline``'s at that level (``ratio_unit`` after the number). A level a row
    lacks is left empty.
    """
    header = [*labels]
    for level in levels:
        header += [
            f"c={level} {rate}",
            f"c={level} p50 / p99 ms",
            f"c={level} vs {against}",
        ]
    lines = []
    for label, by_level in rows.items():
        cells = list(label)
        for level in levels:
            found = by_level.get(level)
            if found is None:
                cells += ["", "", ""]
                continue
            value, result = found
            base = baseline.get(level)
            errors = f" ({sum(result.errors.values())} errors)" if result.errors else ""
            cells += [
                f"{value:.0f}{errors}",
                f"{result.p50_ms:.2f} / {result.p99_ms:.2f}",
                f"{value / base:.2f}{ratio_unit}" if base else "",
            ]
        lines.append(cells)
    return markdown_table(header, lines) + "\n"


def write_report(name: str, text: str) -> None:
    """Write ``text`` to ``OUT/name`` and print it."""
    (OUT / name).write_text(text)
    print(text)
