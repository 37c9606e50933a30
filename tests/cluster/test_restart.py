"""``rayfleet up`` started, stopped and started again, as a user does with
``make demo``: every stop (Ctrl-C, SIGTERM) leaves none of its ports held, HAProxy's
included, and a start that finds a port held names the holder and exits at once.

It runs its own local Ray through ``rayfleet up`` (no ``cluster`` fixture), in a
temporary directory with its own ``RAY_TMPDIR`` and free ports, so it neither sees
nor disturbs another Ray on the machine. About a minute.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest
import yaml

from loadtest.common import free_port
from rayfleet.cli.demo import build_demo_store
from rayfleet.cli.ports import Port, holders, is_held

BIN = Path(sys.executable).parent
REPO = Path(__file__).resolve().parents[2]
READY_TIMEOUT_S = 90
STOP_TIMEOUT_S = 60
LINGER_S = 15

pytestmark = pytest.mark.timeout(300)


class Up:
    """One ``rayfleet up`` at a time in ``workdir``, on fixed ports."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.http, self.grpc = free_port(), free_port()
        self.stats, self.metrics = free_port(), free_port()
        config = yaml.safe_load((REPO / "configs" / "demo.yaml").read_text())
        config["http_options"] = {"host": "127.0.0.1", "port": self.http}
        config["grpc_options"]["port"] = self.grpc
        args = config["applications"][0]["args"]
        args["store"] = str(workdir / "models")
        # The version in the router is enough to put HAProxy, the router and the
        # Validator up, and starts fastest.
        model = args["models"][0]
        model["versions"] = [v for v in model["versions"] if v["name"] == "v1"]
        model.pop("rollout", None)
        args.pop("pools", None)  # no version left in them
        self.config = workdir / "up.yaml"
        self.config.write_text(yaml.safe_dump(config))
        self.env = {
            **os.environ,
            "RAY_TMPDIR": str(workdir),
            "RAY_USAGE_STATS_ENABLED": "0",
            "RAY_SERVE_HAPROXY_STATS_PORT": str(self.stats),
            "RAY_SERVE_HAPROXY_METRICS_PORT": str(self.metrics),
            # A stopping router keeps serving this long (30 s by default) so that
            # an outside load balancer stops sending to it first: each stop here
            # took 32.5 s. Nothing outside uses this HAProxy, and what the test
            # checks (exit code, ports, processes) does not depend on it.
            "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": "2",
        }
        self.env.pop("RAY_ADDRESS", None)
        self.process: subprocess.Popen[bytes] | None = None
        self.log = workdir / "up.log"
        self.offset = 0

    @property
    def ports(self) -> list[Port]:
        return [
            Port("127.0.0.1", self.http, "HTTP", ""),
            Port("127.0.0.1", self.grpc, "gRPC", ""),
            Port("0.0.0.0", self.stats, "HAProxy stats page", ""),
            Port("0.0.0.0", self.metrics, "HAProxy metrics", ""),
        ]

    def start(self) -> subprocess.Popen[bytes]:
        # Each run appends to the log; only this run's part counts.
        self.log.touch()
        self.offset = self.log.stat().st_size
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [str(BIN / "rayfleet"), "up", str(self.config)],
                cwd=self.workdir,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                # Its own session: the test signals it alone, as `kill` would.
                start_new_session=True,
            )
        return self.process

    def wait_serving(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while "serving; press Ctrl-C" not in self.output():
            assert self.process is not None and self.process.poll() is None, (
                self.output()[-4000:]
            )
            assert time.monotonic() < deadline, "rayfleet up never served"
            time.sleep(1)
        ready = httpx.get(f"http://127.0.0.1:{self.http}/v2/health/ready", timeout=10)
        assert ready.status_code == 200

    def output(self) -> str:
        """What the latest run has written."""
        return self.log.read_bytes()[self.offset :].decode(errors="replace")

    def stop(self, sig: signal.Signals) -> float:
        """Send ``sig``; the seconds until the process has exited with 0."""
        assert self.process is not None
        began = time.monotonic()
        self.process.send_signal(sig)
        code = self.process.wait(timeout=STOP_TIMEOUT_S)
        assert code == 0, self.output()[-4000:]
        return time.monotonic() - began

    def assert_ports_free(self) -> None:
        held = {
            str(port): [(h.pid, h.command) for h in holders(port.number)]
            for port in self.ports
            if is_held(port)
        }
        assert not held, f"still held after stop: {held}"


def _processes_in(workdir: Path) -> list[psutil.Process]:
    # Ray's processes, HAProxy included, inherit the working directory of the
    # `rayfleet up` that started them.
    found = []
    for process in psutil.process_iter():
        with contextlib.suppress(psutil.Error, OSError):
            cwd = Path(process.cwd())
            if cwd == workdir or workdir in cwd.parents:
                found.append(process)
    return found


def _assert_all_exit(workdir: Path) -> None:
    # Ray's workers may take a few seconds more than the driver to exit.
    _, alive = psutil.wait_procs(_processes_in(workdir), timeout=LINGER_S)
    left = []
    for process in alive:
        with contextlib.suppress(psutil.Error):
            left.append((process.pid, " ".join(process.cmdline())[:200]))
    assert not left, f"outlived rayfleet up by {LINGER_S} s: {left}"


@pytest.fixture
def up() -> Iterator[Up]:
    workdir = Path(tempfile.mkdtemp(prefix="rf-up-", dir="/tmp"))
    build_demo_store(str(workdir / "models"))
    runner = Up(workdir)
    try:
        yield runner
    finally:
        if runner.process is not None and runner.process.poll() is None:
            runner.process.kill()
        leftovers = _processes_in(workdir)
        for process in leftovers:
            with contextlib.suppress(psutil.NoSuchProcess):
                process.kill()
        psutil.wait_procs(leftovers, timeout=10)
        shutil.rmtree(workdir, ignore_errors=True)


def test_start_stop_start_leaves_no_port_held(up: Up) -> None:
    up.start()
    up.wait_serving()
    ctrl_c_s = up.stop(signal.SIGINT)
    up.assert_ports_free()
    _assert_all_exit(up.workdir)

    # A held port: named, with its pid, before Ray starts.
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", up.http))
        squatter.listen()
        refused = up.start()
        assert refused.wait(timeout=30) == 2
        text = up.output()
        assert f"127.0.0.1:{up.http} (HTTP) is in use by pid {os.getpid()}" in text
        assert f"kill {os.getpid()}" in text

    up.start()
    up.wait_serving()
    sigterm_s = up.stop(signal.SIGTERM)
    up.assert_ports_free()
    _assert_all_exit(up.workdir)
    print(f"stopped in {ctrl_c_s:.1f} s (Ctrl-C) and {sigterm_s:.1f} s (SIGTERM)")
