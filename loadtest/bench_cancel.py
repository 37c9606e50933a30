"""Overload with deadlines on the direct channel: what the replica runs for
requests whose router already gave up.

One version on ``transport: direct``, one replica, the test suite's python
model (``tests/models.py``) holding each call ``--model-ms`` (a thread's sleep,
asked for by the input's value), no batching, and a router
``request_timeout_s`` of ``--timeout-s``; closed-loop clients, more than the
model keeps up with, for ``--duration`` seconds. Prints the answers by status,
then the calls the replica was sent, those its model ran and those cancelled
(``stats()['direct_cancelled']``: their router sent CANCEL, or their
connection closed, before they answered).

    .venv/bin/python -m loadtest.bench_cancel [--duration 15] [-c 32]

To compare with a tree from before CANCEL, run this file with that tree's code:
``git worktree add /tmp/rf_old <commit>``, then from ``/tmp/rf_old``:
``PYTHONPATH=/tmp/rf_old .venv/bin/python <this repo>/loadtest/bench_cancel.py``.
Starts a Ray of its own on loopback and stops it at the end.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import os
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import ray
from ray import serve

from loadtest.common import free_port
from rayfleet.deployments.app import build
from rayfleet.deployments.serve_env import apply_serve_env
from tests.models import write_python_version

__all__ = ["main"]


def body(model_ms: float) -> dict[str, Any]:
    """A request the test model sleeps ``model_ms`` on (it sleeps x - 1000 ms
    for x >= 1000)."""
    data = [1000 + model_ms, 0]
    return {
        "inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 2], "data": data}]
    }


def app_args(store: Path, timeout_s: float) -> dict[str, Any]:
    version = {
        "name": "v1",
        "num_cpus": 0.1,
        "transport": "direct",
        "batching": {"max_batch_size": 1},
        "autoscaling": {"min_replicas": 1, "max_replicas": 1},
    }
    return {
        "store": str(store),
        "router": {"num_cpus": 0.1, "request_timeout_s": timeout_s},
        "observations": {"enabled": False},
        "models": [{"name": "slow", "versions": [version]}],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=float, default=15.0)
    parser.add_argument("-c", "--concurrency", type=int, default=32)
    parser.add_argument("--timeout-s", type=float, default=0.5)
    parser.add_argument("--model-ms", type=float, default=50.0)
    args = parser.parse_args()
    store = Path(tempfile.mkdtemp(prefix="bench-cancel-"))
    write_python_version(store, "slow", "v1")
    request = body(args.model_ms)
    port = free_port()
    apply_serve_env()
    # The router's shutdown waits this long for an outside load balancer (30 s
    # by default); nothing outside depends on it here.
    os.environ.setdefault("RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S", "2")
    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False)
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        serve.run(build(app_args(store, args.timeout_s)), name="app", route_prefix="/")
        url = f"http://127.0.0.1:{port}/v2/models/slow/infer"
        handle = serve.get_deployment_handle("slow:v1", "app")

        def stats() -> dict[str, Any]:
            found: dict[str, Any] = handle.broadcast("stats").results(timeout_s=30)[0]
            return found

        # Until the router has learned the channel (it asks every second).
        deadline = time.monotonic() + 120
        with httpx.Client(timeout=30) as client:
            while stats()["direct_requests"] == 0:
                if time.monotonic() > deadline:
                    raise SystemExit("the router never used the direct channel")
                client.post(url, json=request)
                time.sleep(0.2)
        before = stats()
        codes: Counter[int] = Counter()
        lock = threading.Lock()
        stop = time.monotonic() + args.duration

        def load() -> None:
            with httpx.Client(timeout=30) as client:
                while time.monotonic() < stop:
                    status = client.post(url, json=request).status_code
                    with lock:
                        codes[status] += 1

        with concurrent.futures.ThreadPoolExecutor(args.concurrency) as pool:
            for _ in range(args.concurrency):
                pool.submit(load)
        time.sleep(2)  # the last cancelled calls end
        after = stats()
        sent = after["direct_requests"] - before["direct_requests"]
        runs = sum(after["batch_sizes"].values()) - sum(before["batch_sizes"].values())
        cancelled = after.get("direct_cancelled", 0) - before.get("direct_cancelled", 0)
        print(f"answers by status: {dict(sorted(codes.items()))}")
        print(f"calls sent {sent}, model runs {runs}, cancelled {cancelled}")
    finally:
        serve.shutdown()  # type: ignore[no-untyped-call]
        ray.shutdown()


if __name__ == "__main__":
    main()
