"""A step of load against a live rayfleet app, once per autoscaling policy.

    .venv/bin/python -m loadtest.step_load [--phases 20:1,60:32,100:4]
        [--policies rayfleet serve] [--target-ongoing-requests 4] [--max-replicas 8]
        [--hold-ms 0]

For each policy, in turn and on the same profile:

1. a server process starts a local Ray (``num_cpus=8``) and Serve on a free
   loopback port, serving the digits demo model (``v1``, built into a temporary
   store; with ``--hold-ms``, each model call is held that long without using a
   CPU, as on an accelerator) with that policy's ``autoscaling_config``, and
   samples every second how
   many replicas of each version run, start and stop (``serve.status()``);
2. a load process at ``nice 19`` (Ray's workers run at 15) drives it with locust's
   library API: closed-loop users from ``loadtest/locustfile.py`` with no think
   time, so the requests in flight track the user count, following the step
   profile (``seconds:users`` phases), and records every request;
3. the server is told to stop (a stop file: Ray owns the driver's SIGTERM), shuts
   Serve and Ray down, and is killed by its pid only if it hangs.

Then it writes, under ``--out`` (``loadtest/out/step_load``): per policy a CSV of
every second (users, client in-flight, replicas per version, requests/s, p50, p99,
failures), the raw requests and the server log; ``step_load.png`` with users,
replicas and latency over time for all policies; and ``summary.md``, the
comparison table it also prints: seconds from the step until a first replica is
added and until enough run, p99 during the step, direction changes of the replica
count in each phase, seconds until the count is back down after the load drops,
the slowest request from then on, failed requests.

"Enough replicas" is ``ceil(users / target_ongoing_requests)``, capped at the
maximum: what the clients ask for. On a small machine the deployment itself may
never see that many requests (the proxy and the router queue some on their own
CPU), so read it with the replica count the run did reach. The app's versions name
their policy in ``autoscaling.policy``, the way a config file does (``rayfleet`` or
``serve``); the run stops at once if the spec does not have that field yet.
Loopback only; every phase is bounded and the whole run stops by itself. Needs
matplotlib (a dev dependency).
"""

from __future__ import annotations

import argparse
import csv
import itertools
import json
import math
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["Phase", "Profile", "RunResult", "Summary", "main", "summarize"]

ROOT = Path(__file__).resolve().parent.parent
APP = "rayfleet"
MODEL = "digits"
VERSION = "v1"
DEFAULT_PHASES = "20:1,60:32,100:4"
POLICIES = ("rayfleet", "serve")
READY_TIMEOUT_S = 240.0
STOP_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class Phase:
    """Hold ``users`` closed-loop users for ``duration_s`` seconds."""

    duration_s: float
    users: int


@dataclass(frozen=True)
class Profile:
    """Phases one after another; the load test ends with the last."""

    phases: tuple[Phase, ...]

    @classmethod
    def parse(cls, text: str) -> Profile:
        """``"20:1,60:32,100:4"``: 20 s of 1 user, 60 s of 32, 100 s of 4."""
        phases = []
        for part in text.split(","):
            seconds, _, users = part.partition(":")
            phase = Phase(float(seconds), int(users))
            if phase.duration_s <= 0 or phase.users < 1:
                raise ValueError(f"bad phase {part!r}: want seconds > 0, users >= 1")
            phases.append(phase)
        if not phases:
            raise ValueError("a profile needs at least one phase, e.g. 20:1,60:32")
        return cls(tuple(phases))

    @property
    def duration_s(self) -> float:
        """How long the whole profile runs."""
        return sum(phase.duration_s for phase in self.phases)

    def bounds(self) -> list[tuple[float, float, int]]:
        """``(start_s, end_s, users)`` of each phase."""
        out = []
        start = 0.0
        for phase in self.phases:
            out.append((start, start + phase.duration_s, phase.users))
            start += phase.duration_s
        return out

    def users_at(self, elapsed_s: float) -> int | None:
        """Users at ``elapsed_s`` into the run; ``None`` once it is over."""
        for start, end, users in self.bounds():
            if start <= elapsed_s < end:
                return users
        return None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def app_args(
    store: str, policy: str, target: float, max_replicas: int
) -> dict[str, Any]:
    """The spec the server deploys: the digits model's ``v1`` alone."""
    return {
        "store": store,
        "router": {"num_cpus": 0.1, "request_timeout_s": 30},
        "models": [
            {
                "name": MODEL,
                "versions": [
                    {
                        "name": VERSION,
                        "num_cpus": 0.25,
                        "batching": {
                            "max_batch_size": 8,
                            "batch_wait_timeout_s": 0.002,
                        },
                        "autoscaling": {
                            "min_replicas": 1,
                            "max_replicas": max_replicas,
                            "target_ongoing_requests": target,
                            "policy": policy,
                        },
                    }
                ],
            }
        ],
    }


# The digits model as a slow accelerator would serve it: the real ONNX model, and
# then a wait until the call has taken HOLD_MS. A sleep holds the request without
# holding a core, so the replica count, not the two CPUs of a test machine, decides
# how many requests are served at once, as on a GPU.
HELD_MODEL = """
import time
from pathlib import Path

import onnxruntime as ort

HOLD_S = {hold_s!r}


def load(version_dir):
    session = ort.InferenceSession(str(Path(version_dir, "model.onnx")))

    def predict(inputs):
        started = time.perf_counter()
        label, probabilities = session.run(None, dict(inputs))
        time.sleep(max(0.0, HOLD_S - (time.perf_counter() - started)))
        return {{"label": label, "probabilities": probabilities}}

    return predict
"""


def hold_version(folder: Path, hold_ms: float) -> None:
    """Turn the ONNX version in ``folder`` into a python one that runs the same
    model and holds each call for ``hold_ms`` (per batch, as an accelerator does)."""
    (folder / "held.py").write_text(HELD_MODEL.format(hold_s=hold_ms / 1000))
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest.update(
        runtime="python", artifact="held.py", python={"callable": "held:load"}
    )
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2))


# --- the server process -------------------------------------------------------


def serve_main(argv: Sequence[str]) -> int:
    """Serve the app with one policy and sample its replicas until SIGTERM."""
    parser = argparse.ArgumentParser(prog="step_load serve")
    parser.add_argument("--policy", required=True)
    parser.add_argument("--store", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--target-ongoing-requests", type=float, required=True)
    parser.add_argument("--max-replicas", type=int, required=True)
    parser.add_argument("--num-cpus", type=int, default=8)
    parser.add_argument("--ready-file", type=Path, required=True)
    parser.add_argument("--stop-file", type=Path, required=True)
    parser.add_argument("--samples", type=Path, required=True)
    args = parser.parse_args(argv)

    # Imported here: the load process must not load Ray, nor this one gevent.
    import httpx
    import ray
    from ray import serve

    from rayfleet.deployments.app import build

    # Ray installs its own SIGTERM handler in the driver; a file is the stop sign.
    stopping = args.stop_file.exists
    ray.init(
        address="local",
        num_cpus=args.num_cpus,
        include_dashboard=False,
        log_to_driver=False,
    )
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": args.port})
        spec = app_args(
            args.store, args.policy, args.target_ongoing_requests, args.max_replicas
        )
        serve.run(build(spec), name=APP, route_prefix="/")
        url = f"http://127.0.0.1:{args.port}/v2/health/ready"
        deadline = time.monotonic() + READY_TIMEOUT_S
        while httpx.get(url).status_code != 200:
            if time.monotonic() > deadline or stopping():
                return 1
            time.sleep(0.5)
        args.ready_file.write_text("ready")
        with args.samples.open("w", newline="") as file:
            writer = csv.writer(file)
            writer.writerow(["time", "deployment", "running", "starting", "stopping"])
            next_at = time.time()
            while not stopping():
                time.sleep(max(0.0, next_at - time.time()))
                next_at += 1.0
                now = time.time()
                deployments = serve.status().applications[APP].deployments
                for name, deployment in deployments.items():
                    if not name.startswith(f"{MODEL}:"):
                        continue
                    states = {
                        getattr(state, "value", state): count
                        for state, count in deployment.replica_states.items()
                    }
                    writer.writerow(
                        [
                            f"{now:.3f}",
                            name,
                            states.get("RUNNING", 0),
                            states.get("STARTING", 0),
                            states.get("STOPPING", 0),
                        ]
                    )
                file.flush()
        return 0
    finally:
        serve.shutdown()  # type: ignore[no-untyped-call]
        ray.shutdown()


# --- the load process ---------------------------------------------------------


def load_main(argv: Sequence[str]) -> int:
    """Run the step profile against ``--host`` at nice 19 and record requests."""
    parser = argparse.ArgumentParser(prog="step_load load")
    parser.add_argument("--host", required=True)
    parser.add_argument("--phases", required=True)
    parser.add_argument("--requests", type=Path, required=True)
    parser.add_argument("--users", type=Path, required=True)
    args = parser.parse_args(argv)
    profile = Profile.parse(args.phases)

    os.nice(19)
    # Imported here: locust patches the standard library with gevent on import.
    import gevent
    from locust import LoadTestShape, constant
    from locust.env import Environment
    from locust.runners import STATE_CLEANUP, STATE_STOPPED, STATE_STOPPING

    from loadtest.locustfile import RayfleetUser

    class StepUser(RayfleetUser):
        # Closed loop with no think time: requests in flight follow the users.
        wait_time = constant(0)

    class StepShape(LoadTestShape):
        def tick(self) -> tuple[int, float] | None:
            users = profile.users_at(time.time() - started_at)
            # A whole step within a second; locust warns above 100 a second.
            return None if users is None else (users, 100.0)

    requests: list[tuple[float, float, str, bool]] = []

    def on_request(
        name: str,
        response_time: float,
        exception: BaseException | None,
        start_time: float | None = None,
        **_: Any,
    ) -> None:
        started = start_time if start_time is not None else time.time()
        requests.append((started, response_time, name, exception is None))

    # Locust leaves these two unannotated.
    shape = StepShape()  # type: ignore[no-untyped-call]
    env = Environment(user_classes=[StepUser], shape_class=shape, host=args.host)
    env.events.request.add_listener(on_request)  # type: ignore[no-untyped-call]
    runner = env.create_local_runner()
    users: list[tuple[float, int]] = []
    started_at = time.time()
    runner.start_shape()
    deadline = started_at + profile.duration_s + 30.0
    stopped = (STATE_STOPPING, STATE_STOPPED, STATE_CLEANUP)
    while runner.state not in stopped and time.time() < deadline:
        users.append((time.time(), runner.user_count))
        gevent.sleep(1.0 - (time.time() - started_at) % 1.0)
    runner.quit()

    with args.requests.open("w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["start", "latency_ms", "name", "ok"])
        for start, latency, name, ok in requests:
            writer.writerow([f"{start:.4f}", f"{latency:.2f}", name, int(ok)])
    with args.users.open("w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["time", "users"])
        writer.writerow([f"{started_at:.3f}", 0])
        writer.writerows([f"{at:.3f}", count] for at, count in users)
    return 0


# --- the run: one server and one load per policy, then the report -------------


@dataclass(frozen=True)
class RunResult:
    """What one policy's run recorded, times in seconds since the load began."""

    policy: str
    timeline: list[dict[str, float]]
    starts: np.ndarray
    latencies_ms: np.ndarray
    ok: np.ndarray
    versions: list[str]


@dataclass(frozen=True)
class Summary:
    """The comparison row of one policy; seconds are since the step or the drop."""

    policy: str
    enough_replicas: int
    low_replicas: int
    first_added_s: float | None
    step_to_enough_s: float | None
    peak_replicas: int
    p99_step_ms: float
    direction_changes: list[int]
    scale_down_s: float | None
    max_latency_scale_down_ms: float
    failed: int
    requests: int


def _read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as file:
        return list(csv.DictReader(file))


def _timeline(policy: str, profile: Profile, files: dict[str, Path]) -> RunResult:
    users = [(float(r["time"]), int(r["users"])) for r in _read_csv(files["users"])]
    t0 = users[0][0]
    rows = _read_csv(files["requests"])
    starts = np.array([float(r["start"]) - t0 for r in rows])
    latencies = np.array([float(r["latency_ms"]) for r in rows])
    ok = np.array([r["ok"] == "1" for r in rows], dtype=bool)
    ends = starts + latencies / 1000.0
    samples = _read_csv(files["replicas"])
    versions = sorted({r["deployment"] for r in samples})

    timeline = []
    for second in range(math.ceil(profile.duration_s)):
        row: dict[str, float] = {"t": float(second)}
        row["users"] = float(profile.users_at(second) or 0)
        row["users_running"] = float(
            next((n for at, n in reversed(users) if at - t0 <= second + 1), 0)
        )
        overlap = np.clip(
            np.minimum(ends, second + 1) - np.maximum(starts, second), 0, 1
        )
        row["in_flight"] = float(overlap.sum())
        done = (ends >= second) & (ends < second + 1)
        row["rps"] = float(done.sum())
        row["failures"] = float((done & ~ok).sum())
        finished = latencies[done & ok]
        row["p50_ms"] = (
            float(np.percentile(finished, 50)) if finished.size else math.nan
        )
        row["p99_ms"] = (
            float(np.percentile(finished, 99)) if finished.size else math.nan
        )
        total = 0.0
        for version in versions:
            running = [
                int(r["running"])
                for r in samples
                if r["deployment"] == version and float(r["time"]) - t0 <= second + 0.5
            ]
            count = float(running[-1]) if running else math.nan
            row[f"replicas {version}"] = count
            total += count
        row["replicas"] = total
        timeline.append(row)
    return RunResult(policy, timeline, starts, latencies, ok, versions)


def _direction_changes(counts: Sequence[float]) -> int:
    signs = [
        1 if b > a else -1
        for a, b in itertools.pairwise(counts)
        if b != a and not (math.isnan(a) or math.isnan(b))
    ]
    return sum(1 for a, b in itertools.pairwise(signs) if a != b)


def summarize(
    result: RunResult, profile: Profile, target: float, max_replicas: int
) -> Summary:
    """The comparison numbers of one run (see the module docstring)."""
    bounds = profile.bounds()
    peak = max(range(len(bounds)), key=lambda i: bounds[i][2])
    step_at, drop_at, high_users = bounds[peak]
    low_users = bounds[peak + 1][2] if peak + 1 < len(bounds) else bounds[0][2]
    need_high = min(math.ceil(high_users / target), max_replicas)
    need_low = max(1, min(math.ceil(low_users / target), max_replicas))
    replicas = {int(row["t"]): row["replicas"] for row in result.timeline}
    before_step = replicas.get(math.ceil(step_at) - 1, replicas.get(0, math.nan))

    def first_second(start: float, end: float, holds: Any) -> float | None:
        for second in range(math.ceil(start), math.ceil(end)):
            if holds(replicas.get(second, math.nan)):
                return second - start
        return None

    in_step = (result.starts >= step_at) & (result.starts < drop_at)
    after_drop = result.starts >= drop_at
    step_latencies = result.latencies_ms[in_step & result.ok]
    changes = []
    for start, end, _ in bounds:
        counts = [replicas[s] for s in range(math.ceil(start), math.ceil(end))]
        changes.append(_direction_changes(counts))
    return Summary(
        policy=result.policy,
        enough_replicas=need_high,
        low_replicas=need_low,
        first_added_s=first_second(step_at, drop_at, lambda n: n > before_step),
        step_to_enough_s=first_second(step_at, drop_at, lambda n: n >= need_high),
        peak_replicas=int(np.nanmax(list(replicas.values()))),
        p99_step_ms=float(np.percentile(step_latencies, 99))
        if step_latencies.size
        else math.nan,
        direction_changes=changes,
        scale_down_s=first_second(drop_at, profile.duration_s, lambda n: n <= need_low),
        max_latency_scale_down_ms=float(result.latencies_ms[after_drop].max())
        if after_drop.any()
        else math.nan,
        failed=int((~result.ok).sum()),
        requests=int(result.ok.size),
    )


def _table(summaries: Sequence[Summary], profile: Profile) -> str:
    def seconds(value: float | None) -> str:
        return "not within the run" if value is None else f"{value:.0f} s"

    def scale_down(summary: Summary) -> str:
        if summary.peak_replicas <= summary.low_replicas:
            return "n/a: never scaled up"
        return seconds(summary.scale_down_s)

    phases = "/".join(str(p.users) for p in profile.phases)
    enough = summaries[0].enough_replicas if summaries else 0
    rows = [
        (
            "seconds from the step to a first added replica",
            [seconds(s.first_added_s) for s in summaries],
        ),
        (
            f"seconds from the step to enough replicas ({enough})",
            [seconds(s.step_to_enough_s) for s in summaries],
        ),
        ("most replicas running", [str(s.peak_replicas) for s in summaries]),
        ("p99 during the step", [f"{s.p99_step_ms:.0f} ms" for s in summaries]),
        (
            f"direction changes per phase ({phases} users)",
            ["/".join(map(str, s.direction_changes)) for s in summaries],
        ),
        ("seconds to scale down after the drop", [scale_down(s) for s in summaries]),
        (
            "slowest request after the drop",
            [f"{s.max_latency_scale_down_ms:.0f} ms" for s in summaries],
        ),
        ("failed requests", [f"{s.failed} of {s.requests}" for s in summaries]),
    ]
    header = "| | " + " | ".join(s.policy for s in summaries) + " |"
    rule = "|---|" + "---|" * len(summaries)
    lines = [header, rule]
    lines += ["| " + name + " | " + " | ".join(cells) + " |" for name, cells in rows]
    return "\n".join(lines)


def _plot(results: Sequence[RunResult], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (load, replicas, latency) = plt.subplots(
        3, 1, sharex=True, figsize=(10, 9), constrained_layout=True
    )
    for index, result in enumerate(results):
        color = f"C{index}"
        t = [row["t"] for row in result.timeline]
        if index == 0:
            load.step(
                t,
                [row["users"] for row in result.timeline],
                "k",
                where="post",
                label="users",
            )
        load.plot(
            t,
            [row["in_flight"] for row in result.timeline],
            color,
            label=f"in flight ({result.policy})",
        )
        replicas.step(
            t,
            [row["replicas"] for row in result.timeline],
            color,
            where="post",
            label=result.policy,
        )
        latency.plot(
            t,
            [row["p50_ms"] for row in result.timeline],
            color,
            linestyle=":",
            label=f"p50 ({result.policy})",
        )
        latency.plot(
            t,
            [row["p99_ms"] for row in result.timeline],
            color,
            label=f"p99 ({result.policy})",
        )
    load.set_ylabel("users / requests")
    replicas.set_ylabel("running replicas")
    latency.set_ylabel("latency (ms)")
    latency.set_yscale("log")
    latency.set_xlabel("seconds since the load began")
    for axes in (load, replicas, latency):
        axes.grid(alpha=0.3)
        axes.legend(loc="upper right", fontsize="small")
    figure.savefig(path, dpi=120)
    plt.close(figure)


def _run_policy(
    policy: str, store: str, args: argparse.Namespace, out: Path
) -> RunResult:
    port = _free_port()
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
    return _timeline(policy, args.profile, files)


def run_main(argv: Sequence[str]) -> int:
    """Run every policy on the profile and report."""
    parser = argparse.ArgumentParser(
        prog="python -m loadtest.step_load", description=__doc__.split("\n\n")[0]
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
    parser.add_argument(
        "--out", type=Path, default=ROOT / "loadtest" / "out" / "step_load"
    )
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
            results.append(_run_policy(policy, store, args, args.out))

    summaries = []
    for result in results:
        path = args.out / f"{result.policy}-timeline.csv"
        with path.open("w", newline="") as file:
            writer = csv.DictWriter(file, fieldnames=list(result.timeline[0]))
            writer.writeheader()
            writer.writerows(result.timeline)
        summaries.append(
            summarize(
                result, args.profile, args.target_ongoing_requests, args.max_replicas
            )
        )
    _plot(results, args.out / "step_load.png")
    table = _table(summaries, args.profile)
    (args.out / "summary.md").write_text(table + "\n")
    (args.out / "summary.json").write_text(
        json.dumps([asdict(s) for s in summaries], indent=2) + "\n"
    )
    print(table)
    print(f"\nwrote {args.out}/: step_load.png, summary.md, *-timeline.csv")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``serve`` and ``load`` are the two child processes; anything else runs."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["serve"]:
        return serve_main(argv[1:])
    if argv[:1] == ["load"]:
        return load_main(argv[1:])
    return run_main(argv)


if __name__ == "__main__":
    sys.exit(main())
