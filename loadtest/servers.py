"""Starting a server under test as its own process, and stopping it cleanly."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import httpx

__all__ = ["ROOT", "server_process"]

ROOT = Path(__file__).resolve().parent.parent


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
        # SIGINT lets a Ray server shut its own local cluster down; never
        # `ray stop`, which would end every Ray on the machine.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGINT)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        log.close()
