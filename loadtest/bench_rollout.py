"""How fast a bad canary is caught on real Serve, at the default rollout settings.

Starts a local Ray and serves digits v1 (stable, in the router) with the
deliberately bad v3 as a canary under the default ``RolloutSpec``, sends a steady
50 requests/s of held-out digits, and reports how many requests the canary answered
and how many seconds passed from the rollout's first step to its rollback.

    .venv/bin/python -m loadtest.bench_rollout [--rps 50] [--limit-s 180]

Loopback only; bounded; shuts its own Ray down.
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
from collections import Counter

import httpx
import numpy as np
import ray
from ray import serve

from rayfleet.cli.demo import build_demo_store, digits_split
from rayfleet.deployments.app import build
from rayfleet.deployments.serve_env import apply_serve_env


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rps", type=float, default=50.0)
    parser.add_argument("--limit-s", type=float, default=180.0)
    parser.add_argument("--port", type=int, default=18321)
    args = parser.parse_args()
    store = tempfile.mkdtemp(prefix="rayfleet-bench-rollout-")
    build_demo_store(store)
    apply_serve_env()
    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False)
    serve.start(http_options={"host": "127.0.0.1", "port": args.port})
    spec = {
        "store": store,
        "router": {"num_cpus": 0.5},
        "models": [
            {
                "name": "digits",
                "rollout": {},  # every default
                "versions": [
                    {"name": "v1", "placement": "router"},
                    {"name": "v3", "canary": True, "num_cpus": 0.5},
                ],
            }
        ],
    }
    serve.run(build(spec), name="bench", route_prefix="/")
    url = f"http://127.0.0.1:{args.port}"
    rows = digits_split()[1]
    answered: Counter[str] = Counter()
    statuses: Counter[int] = Counter()
    stop = threading.Event()

    def client() -> None:
        rng = np.random.default_rng(0)
        with httpx.Client(base_url=url, timeout=30) as http:
            next_at = time.monotonic()
            while not stop.is_set():
                row = rows[rng.integers(len(rows))]
                body = {
                    "inputs": [
                        {"name": "input", "shape": [1, 64], "datatype": "FP32",
                         "data": row.tolist()}
                    ]
                }  # fmt: skip
                response = http.post("/v2/models/digits/infer", json=body)
                statuses[response.status_code] += 1
                answered[response.headers.get("x-model-version", "?")] += 1
                next_at += 1 / args.rps
                time.sleep(max(0.0, next_at - time.monotonic()))

    thread = threading.Thread(target=client, daemon=True)
    began = time.monotonic()
    thread.start()
    state = None
    try:
        while time.monotonic() - began < args.limit_s:
            state = httpx.get(f"{url}/-/rollouts", timeout=10).json()["digits"]
            if state["rollout"] and state["rollout"]["phase"] == "rolled_back":
                break
            time.sleep(0.5)
    finally:
        stop.set()
        thread.join(timeout=30)
        serve.shutdown()
        ray.shutdown()
    assert state is not None and state["rollout"] is not None
    history = state["rollout"]["history"]
    first_step = next(h["ts"] for h in history if h["phase"] == "canary")
    ended = history[-1]
    print(f"rollout of v3 at default settings, {args.rps:g} requests/s offered:")
    print(f"  phase:                      {ended['phase']} ({ended['reason']})")
    print(f"  canary requests answered:   {answered['v3']}")
    print(f"  seconds, first step to end: {ended['ts'] - first_step:.1f}")
    print(f"  client statuses:            {dict(statuses)}")


if __name__ == "__main__":
    main()
