"""The server child: the app under one autoscaling policy, sampled every second.

    python -m loadtest.step_load serve --policy P --store DIR --port N ...

Runs a local Ray and Serve with the digits model's ``v1``, writes the ready file
once the app answers, samples how many replicas of each version run, start and
stop (``serve.status()``) into a CSV, and shuts Serve and Ray down once the stop
file appears (Ray owns the driver's SIGTERM). Ray is imported only in here.
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "APP",
    "MODEL",
    "READY_TIMEOUT_S",
    "VERSION",
    "app_args",
    "hold_version",
    "serve_main",
]

APP = "rayfleet"
MODEL = "digits"
VERSION = "v1"
READY_TIMEOUT_S = 240.0


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
