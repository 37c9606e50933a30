"""The servers under test: how a benchmark describes one (``Server``,
``target_command``, ``rayfleet_env``), starts it as its own process and stops it
cleanly (``server_process``, ``serving``), and loads each in turn (``load_each``).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from loadtest.common import OUT, ROOT, STORE, free_port
from loadtest.loadgen import LoadResult, infer_load
from rayfleet.deployments.serve_env import apply_serve_env

__all__ = [
    "Server",
    "load_each",
    "rayfleet_env",
    "server_process",
    "serving",
    "stop_session",
    "target_command",
]


@dataclass(frozen=True)
class Server:
    """A server process: its command (``{port}`` is replaced) and environment."""

    name: str
    command: list[str]
    env: dict[str, str] = field(default_factory=dict)


def target_command(kind: str, *options: str, model: str = "image") -> list[str]:
    """``python -m loadtest.targets KIND`` on the benchmark store and ``{port}``,
    serving ``model``, with ``options`` after."""
    return [
        sys.executable,
        "-m",
        "loadtest.targets",
        kind,
        "--store",
        str(STORE),
        "--port",
        "{port}",
        "--model",
        model,
        *options,
    ]


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
def server_process(
    name: str,
    command: Sequence[str],
    env: Mapping[str, str],
    port: int,
    ready_path: str,
    log_dir: Path,
    ready_timeout_s: float,
) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``command`` (``{port}`` in it replaced) in a session of its own, wait
    until ``ready_path`` on ``port`` answers 200, stop it afterwards.

    Output goes to ``log_dir/{name}.log``. Yields the process; Ray's processes
    are its descendants, and the whole session is stopped together.
    """
    log = open(log_dir / f"{name}.log", "wb")  # noqa: SIM115 - closed below
    process = subprocess.Popen(
        [part.replace("{port}", str(port)) for part in command],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), **env},
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}{ready_path}"
    try:
        deadline = time.monotonic() + ready_timeout_s
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"{name} exited; see {log.name}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(url, timeout=2).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name} never became ready; see {log.name}")
            time.sleep(0.5)
        yield process
    finally:
        stop_session(process)
        log.close()


def stop_session(process: subprocess.Popen[bytes]) -> None:
    """Stop ``process`` and everything in its session (Ray's processes too)."""
    # SIGINT lets a Ray server shut its own local cluster down; never `ray
    # stop`, which would end every Ray on the machine.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGINT)
    try:
        process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


@contextlib.contextmanager
def serving(
    server: Server, port: int, model: str = "image", ready_timeout_s: float = 240
) -> Iterator[subprocess.Popen[bytes]]:
    """Start ``server`` on ``port``, wait until ``model`` is ready, stop it after;
    its log goes to ``OUT``.

    Yields the process; Ray's processes are its descendants.
    """
    with server_process(
        server.name,
        server.command,
        server.env,
        port,
        f"/v2/models/{model}/ready",
        OUT,
        ready_timeout_s,
    ) as process:
        yield process


def load_each(
    servers: Iterable[Server],
    only: Sequence[str] | None,
    levels: Sequence[int],
    body: bytes,
    headers: dict[str, str],
    duration_s: float,
) -> Iterator[tuple[Server, LoadResult]]:
    """Start each server in turn on a free port (with ``only``, just those whose
    name holds one of its words), load its image model at each concurrency in
    ``levels``, stop it; yields each measurement as it is made."""
    for server in servers:
        if only and not any(word in server.name for word in only):
            continue
        port = free_port()
        with serving(server, port):
            for concurrency in levels:
                yield server, infer_load(port, body, headers, concurrency, duration_s)
