"""The run: for each policy in turn, a server process and a load process on the
same profile; then the report."""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from loadtest import step_load
from loadtest.common import OUT, ROOT, free_port
from loadtest.step_load.profile import DEFAULT_PHASES, Profile
from loadtest.step_load.report import RunResult, read_run, report_runs
from loadtest.step_load.server import MODEL, READY_TIMEOUT_S, VERSION, hold_version

__all__ = ["POLICIES", "run_main", "run_policy"]

POLICIES = ("rayfleet", "serve")
STOP_TIMEOUT_S = 60.0
DESCRIPTION = (step_load.__doc__ or "").split("\n\n")[0]


def run_policy(
    policy: str, store: str, args: argparse.Namespace, out: Path
) -> RunResult:
    """Start the server with ``policy``, drive it with the profile, stop it."""
    port = free_port()
    ready = out / f"{policy}.ready"
    stop = out / f"{policy}.stop"
    ready.unlink(missing_ok=True)
    stop.unlink(missing_ok=True)
    files = {
        name: out / f"{policy}-{name}.csv" for name in ("replicas", "requests", "users")
    }
    module = [sys.executable, "-m", "loadtest.step_load"]
    with (out / f"{policy}-server.log").open("w") as log:
        server = subprocess.Popen(
            [
                *module,
                "serve",
                f"--policy={policy}",
                f"--store={store}",
                f"--port={port}",
                f"--target-ongoing-requests={args.target_ongoing_requests}",
                f"--max-replicas={args.max_replicas}",
                f"--ready-file={ready}",
                f"--stop-file={stop}",
                f"--samples={files['replicas']}",
            ],
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.monotonic() + READY_TIMEOUT_S
            while not ready.exists():
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        f"the {policy} server did not start; see {log.name}"
                    )
                time.sleep(0.5)
            seconds = args.profile.duration_s
            print(
                f"[{policy}] serving on :{port}, load for {seconds:.0f} s", flush=True
            )
            subprocess.run(
                [
                    *module,
                    "load",
                    f"--host=http://127.0.0.1:{port}",
                    f"--phases={args.phases}",
                    f"--requests={files['requests']}",
                    f"--users={files['users']}",
                ],
                cwd=ROOT,
                check=True,
                timeout=args.profile.duration_s + 120,
            )
        finally:
            stop.touch()
            try:
                server.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                server.send_signal(signal.SIGTERM)
                try:
                    server.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    server.kill()
                    server.wait()
            ready.unlink(missing_ok=True)
            stop.unlink(missing_ok=True)
    return read_run(policy, args.profile, files)


def run_main(argv: Sequence[str]) -> int:
    """Run every policy on the profile and report."""
    parser = argparse.ArgumentParser(
        prog="python -m loadtest.step_load", description=DESCRIPTION
    )
    parser.add_argument("--phases", default=DEFAULT_PHASES, help="seconds:users,...")
    parser.add_argument(
        "--policies", nargs="+", choices=POLICIES, default=list(POLICIES)
    )
    parser.add_argument("--target-ongoing-requests", type=float, default=4.0)
    parser.add_argument("--max-replicas", type=int, default=8)
    parser.add_argument(
        "--hold-ms",
        type=float,
        default=0.0,
        help="hold each model call this long without using the CPU (an accelerator)",
    )
    parser.add_argument("--out", type=Path, default=OUT / "step_load")
    args = parser.parse_args(argv)
    args.profile = Profile.parse(args.phases)

    from rayfleet.cli.demo import build_demo_store

    args.out.mkdir(parents=True, exist_ok=True)
    results = []
    with tempfile.TemporaryDirectory(prefix="step-load-") as scratch:
        store = str(Path(scratch) / "store")
        build_demo_store(store)
        if args.hold_ms > 0:
            hold_version(Path(store) / MODEL / VERSION, args.hold_ms)
        for policy in args.policies:
            results.append(run_policy(policy, store, args, args.out))

    report_runs(
        results,
        args.profile,
        args.target_ongoing_requests,
        args.max_replicas,
        args.out,
    )
    return 0
