"""Fault injection under steady load: kill a process, count what users saw.

Starts a local Ray with rayfleet's Serve settings (HAProxy in front, direct
ingress), serves digits v1 in the router and v2 in two replicas of its own, half
the traffic each, and sends a steady open-loop load of v2 JSON requests (4
held-out rows each) through HAProxy. Each fault is one process killed by pid with
SIGKILL, as the kernel's OOM killer or a crashed node would:

- ``replica``: one of v2's two replicas;
- ``validator``: the Validator (observations, plans and the admin pages);
- ``router2``: one of two router replicas;
- ``router1``: the only router replica;
- ``controller``: Serve's controller, which Ray restarts.

Per fault it reports the requests sent, failed (5xx, dropped connections and
timeouts, by kind), wrong answers (a 200 whose outputs differ from what the same
version answered to the same rows before any fault), the seconds from the kill to
the last failure, and the seconds until Serve reports every deployment running its
replicas again::

    .venv/bin/python -m loadtest.chaos [--rps 40] [--after-s 40] [--faults ...] \
        [--transport direct]

Loopback only; bounded (every phase has a deadline); shuts its own Ray down.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
import numpy as np
import ray
from ray import serve

from loadtest.common import actor_pids, free_port, markdown_table, write_report
from rayfleet.cli.demo import build_demo_store, digits_split
from rayfleet.deployments.app import build
from rayfleet.deployments.serve_env import apply_serve_env

APP = "chaos"
VERSIONS = ("v1", "v2")
ROWS_PER_REQUEST = 4
BATCHES = 50
REQUEST_TIMEOUT_S = 10.0
RECOVERY_LIMIT_S = 120.0
FAULTS = ("replica", "validator", "router2", "controller", "router1")


def spec(store: str, routers: int, transport: str = "handle") -> dict[str, Any]:
    """The demo's layout without a rollout: v1 in the router, v2 in two replicas
    reached over ``transport``."""
    fixed = {"min_replicas": routers, "max_replicas": routers}
    return {
        "store": store,
        "router": {"num_cpus": 0.25, "autoscaling": fixed},
        "observations": {"num_cpus": 0.25},
        "models": [
            {
                "name": "digits",
                "versions": [
                    {"name": "v1", "placement": "router", "weight": 50},
                    {
                        "name": "v2",
                        "num_cpus": 0.25,
                        "transport": transport,
                        "weight": 50,
                        "autoscaling": {"min_replicas": 2, "max_replicas": 2},
                    },
                ],
            }
        ],
    }


def request_body(rows: np.ndarray) -> dict[str, Any]:
    """A v2 JSON request of ``rows``."""
    return {
        "inputs": [
            {
                "name": "input",
                "datatype": "FP32",
                "shape": list(rows.shape),
                "data": rows.ravel().tolist(),
            }
        ]
    }


def outputs_of(body: dict[str, Any]) -> dict[str, np.ndarray]:
    """A v2 JSON response's outputs by name."""
    return {o["name"]: np.asarray(o["data"]) for o in body["outputs"]}


def same_outputs(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> bool:
    """Equal labels and probabilities; batching may change float rounding only."""
    return a.keys() == b.keys() and all(
        np.allclose(a[name], b[name], rtol=1e-4, atol=1e-6) for name in a
    )


@dataclass
class Tally:
    """What one phase of load saw, with the time of every failure."""

    sent: int = 0
    ok: int = 0
    wrong: int = 0
    failures: Counter[str] = field(default_factory=Counter)
    failed_at: list[float] = field(default_factory=list)
    answered_by: Counter[str] = field(default_factory=Counter)

    @property
    def failed(self) -> int:
        return sum(self.failures.values())

    def fail(self, kind: str, at: float) -> None:
        self.failures[kind] += 1
        self.failed_at.append(at)


class Load:
    """An open-loop load at ``rps`` until stopped, checked against ground truth."""

    def __init__(
        self,
        url: str,
        batches: Sequence[np.ndarray],
        truth: dict[tuple[str, int], dict[str, np.ndarray]],
        rps: float,
    ) -> None:
        self.url = url
        self.bodies = [request_body(rows) for rows in batches]
        self.truth = truth
        self.rps = rps
        self.tally = Tally()

    async def _one(self, client: httpx.AsyncClient, index: int) -> None:
        self.tally.sent += 1
        try:
            response = await client.post(
                f"{self.url}/v2/models/digits/infer",
                json=self.bodies[index % len(self.bodies)],
            )
        except httpx.TimeoutException:
            self.tally.fail("timeout", time.monotonic())
            return
        except httpx.TransportError as error:
            self.tally.fail(type(error).__name__, time.monotonic())
            return
        if response.status_code != 200:
            self.tally.fail(str(response.status_code), time.monotonic())
            return
        version = response.headers.get("x-model-version", "?")
        self.tally.answered_by[version] += 1
        expected = self.truth.get((version, index % len(self.bodies)))
        if expected is None or not same_outputs(outputs_of(response.json()), expected):
            self.tally.wrong += 1
        else:
            self.tally.ok += 1

    async def run(self, seconds: float, during: Callable[[], None] | None) -> Tally:
        """Send for ``seconds``; call ``during`` (the fault) after the first fifth."""
        limits = httpx.Limits(max_connections=400, max_keepalive_connections=64)
        timeout = httpx.Timeout(REQUEST_TIMEOUT_S)
        async with httpx.AsyncClient(limits=limits, timeout=timeout) as client:
            tasks: list[asyncio.Task[None]] = []
            start = time.monotonic()
            fault_at = start + seconds / 5
            index = 0
            while (now := time.monotonic()) < start + seconds:
                if during is not None and now >= fault_at:
                    # The kill is a blocking call of a few milliseconds.
                    during()
                    during = None
                tasks.append(asyncio.create_task(self._one(client, index)))
                index += 1
                await asyncio.sleep(
                    max(0.0, start + index / self.rps - time.monotonic())
                )
            await asyncio.gather(*tasks)
        return self.tally


def ground_truth(
    url: str, batches: Sequence[np.ndarray]
) -> dict[tuple[str, int], dict[str, np.ndarray]]:
    """What each version answers to each batch while nothing is wrong."""
    truth = {}
    with httpx.Client(timeout=30) as client:
        for version in VERSIONS:
            for index, rows in enumerate(batches):
                response = client.post(
                    f"{url}/v2/models/digits/versions/{version}/infer",
                    json=request_body(rows),
                )
                response.raise_for_status()
                truth[(version, index)] = outputs_of(response.json())
    return truth


def all_running() -> bool:
    """Whether Serve reports the app and every deployment healthy, with every
    replica it wants running."""
    try:
        status = serve.status()
    except Exception:  # the controller is down: not recovered
        return False
    app = status.applications.get(APP)
    if app is None or app.status != "RUNNING":
        return False
    return all(d.status == "HEALTHY" for d in app.deployments.values())


def target_class(fault: str) -> str:
    """The Ray actor class name of the process ``fault`` kills."""
    return {
        "replica": f":{APP}:digits:v2",
        "validator": f":{APP}:Validator",
        "router1": f":{APP}:Router",
        "router2": f":{APP}:Router",
        "controller": "ServeController",
    }[fault]


def wait_until(
    check: Callable[[], bool], limit_s: float, every_s: float = 0.25
) -> float:
    """Seconds until ``check()`` holds; raises after ``limit_s``."""
    start = time.monotonic()
    while not check():
        if time.monotonic() - start > limit_s:
            raise TimeoutError(f"not recovered within {limit_s:g} s")
        time.sleep(every_s)
    return time.monotonic() - start


@dataclass(frozen=True)
class Outcome:
    """One fault's row in the table; seconds count from the kill."""

    fault: str
    routers: int
    tally: Tally
    last_failure_s: float | None
    replaced_s: float
    healthy_s: float

    def summary(self) -> str:
        """One line for the console."""
        return (
            f"{self.fault}: sent {self.tally.sent}, failed {self.tally.failed} "
            f"{dict(self.tally.failures)}, wrong {self.tally.wrong}, replaced in "
            f"{self.replaced_s:.1f} s, healthy in {self.healthy_s:.1f} s"
        )


class Recovery:
    """Watches, from the kill on, for the killed process's replacement and for
    Serve to call every deployment healthy again."""

    def __init__(self, name: str, killed_pid: int, before: int) -> None:
        self.name = name
        self.killed_pid = killed_pid
        self.before = before
        self.killed_at = time.monotonic()
        self.replaced_at: float | None = None
        self.healthy_at: float | None = None
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        deadline = self.killed_at + RECOVERY_LIMIT_S
        while time.monotonic() < deadline and self.healthy_at is None:
            now = time.monotonic()
            if self.replaced_at is None:
                pids = actor_pids(self.name)
                if self.killed_pid not in pids and len(pids) >= self.before:
                    self.replaced_at = now
            elif all_running():
                self.healthy_at = now
            time.sleep(0.2)

    def wait(self) -> tuple[float, float]:
        """Seconds from the kill to the replacement and to all healthy."""
        self._thread.join()
        if self.replaced_at is None or self.healthy_at is None:
            raise TimeoutError(f"{self.name} not back within {RECOVERY_LIMIT_S:g} s")
        return self.replaced_at - self.killed_at, self.healthy_at - self.killed_at


def inject(
    fault: str,
    routers: int,
    url: str,
    truth: dict[tuple[str, int], dict[str, np.ndarray]],
    batches: Sequence[np.ndarray],
    args: argparse.Namespace,
) -> Outcome:
    """Run the load with ``fault`` injected, timing the recovery as it goes."""
    name = target_class(fault)
    watch: list[Recovery] = []

    def kill() -> None:
        pids = actor_pids(name)
        if not pids:
            raise RuntimeError(f"no live process for {fault} (ray::...{name})")
        os.kill(pids[0], signal.SIGKILL)
        watch.append(Recovery(name, pids[0], len(pids)))

    load = Load(url, batches, truth, args.rps)
    tally = asyncio.run(load.run(args.after_s * 1.25, kill))
    replaced, healthy = watch[0].wait()
    since = watch[0].killed_at
    last = max(tally.failed_at) - since if tally.failed_at else None
    return Outcome(fault, routers, tally, last, replaced, healthy)


def report(outcomes: Sequence[Outcome], args: argparse.Namespace) -> str:
    """The results as a markdown table with the command that made them."""
    rows = []
    for o in outcomes:
        kinds = ", ".join(f"{k} x{n}" for k, n in o.tally.failures.most_common())
        rows.append(
            [
                o.fault,
                str(o.routers),
                str(o.tally.sent),
                str(o.tally.failed),
                kinds or "-",
                str(o.tally.wrong),
                "-" if o.last_failure_s is None else f"{o.last_failure_s:.1f}",
                f"{o.replaced_s:.1f}",
                f"{o.healthy_s:.1f}",
            ]
        )
    header = [
        "fault",
        "routers",
        "sent",
        "failed",
        "failures",
        "wrong",
        "last failure s",
        "replaced s",
        "all healthy s",
    ]
    command = (
        f".venv/bin/python -m loadtest.chaos --rps {args.rps:g} "
        f"--after-s {args.after_s:g} --faults {','.join(args.faults)} "
        f"--transport {args.transport}"
    )
    return (
        f"{markdown_table(header, rows, right=range(1, 9))}\n\n"
        f"`{command}`; {args.rps:g} requests/s open loop, the fault at "
        f"{args.after_s * 0.25:g} s, load for {args.after_s:g} s after it.\n"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rps", type=float, default=40.0)
    parser.add_argument("--after-s", type=float, default=40.0)
    parser.add_argument("--faults", type=lambda s: s.split(","), default=list(FAULTS))
    parser.add_argument(
        "--transport", choices=["handle", "direct"], default="handle", help="v2's"
    )
    args = parser.parse_args()
    unknown = set(args.faults) - set(FAULTS)
    if unknown:
        parser.error(f"unknown faults {sorted(unknown)}; choose from {FAULTS}")
    store = tempfile.mkdtemp(prefix="rayfleet-chaos-")
    build_demo_store(store)
    apply_serve_env()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    test_rows = digits_split()[1]
    batches = [
        test_rows[i * ROWS_PER_REQUEST : (i + 1) * ROWS_PER_REQUEST].astype(np.float32)
        for i in range(BATCHES)
    ]
    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False)
    outcomes = []
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        truth = None
        for fault in args.faults:
            routers = 1 if fault == "router1" else 2
            serve.run(
                build(spec(store, routers, args.transport)), name=APP, route_prefix="/"
            )
            wait_until(all_running, RECOVERY_LIMIT_S)
            if truth is None:
                truth = ground_truth(url, batches)
            print(f"{fault}: load at {args.rps:g} requests/s ...", flush=True)
            outcomes.append(inject(fault, routers, url, truth, batches, args))
            print(outcomes[-1].summary(), flush=True)
    finally:
        serve.shutdown()
        ray.shutdown()
        shutil.rmtree(store, ignore_errors=True)
    write_report("chaos.md", report(outcomes, args))


if __name__ == "__main__":
    main()
