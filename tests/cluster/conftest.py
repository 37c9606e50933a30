"""A Ray cluster of the suite's own, started and driven the way an operator does.

``ray start --head`` on loopback, ``serve deploy`` and ``serve status`` against the
dashboard address, clients over HTTP: no ``ray.init`` in this process. The cluster
needs its own Ray, so this suite runs as its own pytest invocation
(``pytest tests/cluster``), after the integration suite. Each module that needs a
cluster gets one of its own (``ray_head``), ended before the next module starts
one: two on two cores would slow both.

Everything lives in one short temporary directory, the working directory of
``ray start``: Ray's temp dir (its unix socket paths must stay under ~107
characters), the demo model store at ``build/models`` and the configs. Serve
builds an application in a Ray worker, and workers inherit the working directory
of the ``ray start`` that started their node, so the demo config's relative store
path resolves exactly as it does for a user who runs ``ray start`` in the
repository root.

Teardown never runs ``ray stop``: it ends every process on the machine that looks
like Ray, including other suites' clusters. It ends this cluster's processes
only, by pid: those whose command line names this cluster's temp dir.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
import yaml

from loadtest.common import free_port
from rayfleet.cli.demo import build_demo_store
from rayfleet.deployments.serve_env import SERVE_ENV

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
START_TIMEOUT_S = 90
DEPLOY_TIMEOUT_S = 120


@dataclass(frozen=True)
class Cluster:
    """A running cluster: where it lives and how to reach it."""

    workdir: Path
    dashboard: str
    http_port: int
    env: dict[str, str]
    gcs: str

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def store(self) -> Path:
        return self.workdir / "build" / "models"

    def serve(self, *args: str, timeout: float = 60) -> str:
        """Run the ``serve`` CLI against the cluster; its stdout."""
        command = [str(BIN / "serve"), *args, "--address", self.dashboard]
        done = subprocess.run(
            command,
            cwd=self.workdir,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        assert done.returncode == 0, f"{command} failed:\n{done.stdout}{done.stderr}"
        return done.stdout

    def config(
        self, source: Path, edit: Callable[[dict[str, Any]], None] | None = None
    ) -> Path:
        """A copy of the Serve config at ``source`` for this cluster's port.

        ``edit(config)`` may change it further. The store path is left as it is:
        a relative one resolves against the cluster's working directory.
        """
        config = yaml.safe_load(source.read_text())
        config["http_options"] = {"host": "127.0.0.1", "port": self.http_port}
        if edit is not None:
            edit(config)
        target = self.workdir / "configs" / f"{int(time.monotonic_ns())}.yaml"
        target.parent.mkdir(exist_ok=True)
        target.write_text(yaml.safe_dump(config))
        return target.relative_to(self.workdir)

    def app_status(self, app: str = "rayfleet") -> tuple[str, str]:
        """``(status, message)`` of an application from ``serve status``."""
        status = yaml.safe_load(self.serve("status"))
        entry = (status.get("applications") or {}).get(app) or {}
        return entry.get("status", "NOT_STARTED"), entry.get("message", "")

    def wait_running(self, app: str = "rayfleet") -> None:
        """Wait until ``serve status`` says RUNNING; fail at once on a failure."""
        deadline = time.monotonic() + DEPLOY_TIMEOUT_S
        while True:
            status, message = self.app_status(app)
            if status == "RUNNING":
                return
            assert "FAILED" not in status, f"{app}: {status}: {message}"
            assert time.monotonic() < deadline, f"{app} still {status}: {message}"
            time.sleep(2)


def _processes_of(workdir: Path) -> list[psutil.Process]:
    """Every process of this cluster: they all run in ``workdir``, inherited from
    ``ray start``, even those (the agents) that rename their command line."""
    mine = []
    for process in psutil.process_iter():
        try:
            cwd = Path(process.cwd())
        except (psutil.Error, OSError):
            continue
        if cwd == workdir or workdir in cwd.parents:
            mine.append(process)
    return mine


def _stop(workdir: Path) -> None:
    """End this cluster's processes by pid: SIGTERM, a grace period, SIGKILL."""
    processes = _processes_of(workdir)
    for process in processes:
        with contextlib.suppress(psutil.NoSuchProcess):
            process.send_signal(signal.SIGTERM)
    _, alive = psutil.wait_procs(processes, timeout=5)
    # Workers started after the first sweep, and any that ignored SIGTERM.
    for process in [*alive, *_processes_of(workdir)]:
        with contextlib.suppress(psutil.NoSuchProcess):
            process.kill()


@pytest.fixture(scope="session")
def demo_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo models, built once and copied into each cluster's directory."""
    root = tmp_path_factory.mktemp("demo-store")
    build_demo_store(str(root))
    return root


@contextlib.contextmanager
def ray_head(
    store: Path,
    head_args: Sequence[str],
    env: Mapping[str, str] | None = None,
    gcs_port: int | None = None,
) -> Iterator[Cluster]:
    """``ray start --head`` in a fresh directory holding a copy of ``store``.

    ``head_args`` adds to the start command (resources, an autoscaling config);
    ``env`` adds to its environment; ``gcs_port`` is the head's port when a
    config written beforehand must name it. Every process of the cluster is ended when
    the block exits, its worker nodes' included: they all run in the directory.
    """
    workdir = Path(tempfile.mkdtemp(prefix="rf-", dir="/tmp"))
    shutil.copytree(store, workdir / "build" / "models")
    dashboard_port, http_port = free_port(), free_port()
    cluster_env = {
        **os.environ,
        # Test what ships: HAProxy on the HTTP port, direct ingress, gRPC handles.
        **SERVE_ENV,
        # HAProxy's stats and metrics ports are fixed by default; another
        # suite's cluster on this machine may hold them.
        "RAY_SERVE_HAPROXY_STATS_PORT": str(free_port()),
        "RAY_SERVE_HAPROXY_METRICS_PORT": str(free_port()),
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        # ray start records the cluster's address under RAY_TMPDIR for later
        # ray.init() calls to find: keep that out of the shared /tmp/ray.
        "RAY_TMPDIR": str(workdir),
        "RAY_USAGE_STATS_ENABLED": "0",
        # Ray 2.60 protects the dashboard with a token; this cluster gets one of
        # its own, which the serve CLI reads from the same environment.
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN": secrets.token_hex(32),
        **(env or {}),
    }
    for name in ("RAY_ADDRESS", "RAY_AUTH_TOKEN_PATH"):
        cluster_env.pop(name, None)
    ports = {
        "--port": gcs_port or free_port(),
        "--dashboard-port": dashboard_port,
        "--ray-client-server-port": free_port(),
        "--dashboard-agent-listen-port": free_port(),
        "--dashboard-agent-grpc-port": free_port(),
        "--metrics-export-port": free_port(),
        "--runtime-env-agent-port": free_port(),
    }
    command = [
        str(BIN / "ray"),
        "start",
        "--head",
        "--dashboard-host=127.0.0.1",
        "--include-dashboard=true",
        "--object-store-memory=200000000",
        f"--temp-dir={workdir / 'ray'}",
        "--disable-usage-stats",
        *(f"{flag}={port}" for flag, port in ports.items()),
        *head_args,
    ]
    try:
        started = subprocess.run(
            command,
            cwd=workdir,
            env=cluster_env,
            capture_output=True,
            text=True,
            timeout=START_TIMEOUT_S,
        )
        assert started.returncode == 0, (
            f"ray start failed:\n{started.stderr[-2000:]}{_raylet_log(workdir)}"
        )
        dashboard = f"http://127.0.0.1:{dashboard_port}"
        _wait_dashboard(dashboard)
        yield Cluster(
            workdir, dashboard, http_port, cluster_env, f"127.0.0.1:{ports['--port']}"
        )
    finally:
        _stop(workdir)
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture(scope="module")
def cluster(demo_store: Path) -> Iterator[Cluster]:
    """A single-node cluster of the module's own."""
    with ray_head(demo_store, ["--num-cpus=8"]) as started:
        yield started


def _raylet_log(workdir: Path) -> str:
    # The temp dir goes at teardown, so say here why the node did not start.
    log = workdir / "ray" / "session_latest" / "logs" / "raylet.out"
    if not log.exists():
        return ""
    return "\nraylet.out ends:\n" + "\n".join(log.read_text().splitlines()[-20:])


def _wait_dashboard(dashboard: str) -> None:
    # serve deploy talks to the dashboard, which listens a little after ray start.
    # Any answer will do (without the token it is 401): it is listening.
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        try:
            httpx.get(f"{dashboard}/api/version", timeout=5)
            return
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, f"no dashboard at {dashboard}"
        time.sleep(1)
