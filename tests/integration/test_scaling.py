"""Load balancing and autoscaling on a real Serve app, seen as a user sees them:
request counts per replica in ``/metrics``, replica counts in ``serve.status()``.

The app here is separate from the shared one so its replica counts are its own:
``balanced`` runs exactly four replicas, ``elastic`` scales between one and three
on the rayfleet policy with windows of seconds instead of a minute.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from ray import serve

from rayfleet.deployments.app import build
from rayfleet.platform.rollout.telemetry import replica_requests
from rayfleet.platform.serving.counters import balance_ratio
from tests.models import write_python_version

from .conftest import delete_app, wait_ready

APP = "scaling"
PREFIX = "/scaling"


def _sleep_ms(ms: int) -> dict[str, object]:
    # The python test model sleeps x - 1000 ms for x >= 1000.
    x = 1000 + ms
    tensor = {"name": "x", "shape": [1, 2], "datatype": "FP32", "data": [x, x]}
    return {"inputs": [tensor]}


# The same model on the direct channel: Serve sees none of its requests, so it
# scales only on what the replicas report running on their channels.
ELASTIC_DIRECT = "elastic-direct"


def _elastic(name: str, transport: str) -> dict[str, Any]:
    return {
        "name": name,
        "versions": [
            {
                "name": "v1",
                "num_cpus": 0.05,
                "transport": transport,
                "autoscaling": {
                    "min_replicas": 1,
                    "max_replicas": 3,
                    "target_ongoing_requests": 1,
                    "stable_window_s": 4,
                    "scale_down_delay_s": 2,
                },
            }
        ],
    }


@pytest.fixture(scope="module")
def scaling_url(serve_url: str, store: Path) -> Iterator[str]:
    replica = {"num_cpus": 0.05}
    write_python_version(store, ELASTIC_DIRECT, "v1")
    args = {
        "store": str(store),
        "router": {"num_cpus": 0.1, "request_timeout_s": 5},
        "observations": {"replica_report_s": 0.5},
        "models": [
            {
                "name": "balanced",
                "versions": [
                    {
                        "name": "v1",
                        **replica,
                        "autoscaling": {"min_replicas": 4, "max_replicas": 4},
                    }
                ],
            },
            *(
                _elastic(name, transport)
                for name, transport in (
                    ("elastic", "handle"),
                    (ELASTIC_DIRECT, "direct"),
                )
            ),
        ],
    }
    serve.run(build(args), name=APP, route_prefix=PREFIX)
    url = serve_url + PREFIX
    wait_ready(url, "scaling")
    try:
        yield url
    finally:
        delete_app(APP)


def _replica_requests(url: str, model: str) -> dict[str, float]:
    return replica_requests(httpx.get(f"{url}/metrics", timeout=10).text, model, "v1")


def _direct_requests(model: str) -> int:
    """Requests the version's replicas ran over their direct channels."""
    handle = serve.get_deployment_handle(f"{model}:v1", APP)
    stats = handle.broadcast("stats").results(timeout_s=30)
    return sum(int(s["direct_requests"]) for s in stats)


def _running(deployment: str) -> int:
    status = serve.status().applications[APP].deployments[deployment]
    return int(status.replica_states.get("RUNNING", 0))


async def _load(
    url: str, model: str, concurrency: int, stop: threading.Event, limit: int
) -> list[int]:
    """Up to ``limit`` requests from ``concurrency`` clients, until ``stop``."""
    codes: list[int] = []
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:

        async def user() -> None:
            while not stop.is_set() and len(codes) < limit:
                response = await client.post(
                    f"/v2/models/{model}/infer", json=_sleep_ms(20)
                )
                codes.append(response.status_code)

        await asyncio.gather(*(user() for _ in range(concurrency)))
    return codes


def test_uniform_load_is_balanced_across_four_replicas(scaling_url: str) -> None:
    before = _replica_requests(scaling_url, "balanced")
    # Enough requests that chance alone keeps four equal replicas well within
    # 1.5x (about 250 each: a spread of a few percent).
    codes = asyncio.run(_load(scaling_url, "balanced", 8, threading.Event(), 1000))
    assert set(codes) == {200}
    # Replicas report their totals every half second: wait for all of them.
    deadline = time.monotonic() + 30
    while True:
        after = _replica_requests(scaling_url, "balanced")
        served = {r: after[r] - before.get(r, 0.0) for r in after}
        if sum(served.values()) >= len(codes) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert sum(served.values()) == len(codes), served
    busy = [int(count) for count in served.values() if count > 0]
    assert len(busy) >= 4, served
    ratio = balance_ratio(busy)
    assert ratio is not None and ratio <= 1.5, served


@pytest.mark.parametrize("model", ["elastic", ELASTIC_DIRECT])
def test_load_scales_a_version_up_and_back_down(scaling_url: str, model: str) -> None:
    deployment = f"{model}:v1"
    assert _running(deployment) == 1
    if model == ELASTIC_DIRECT:
        # One client at a time (no reason to scale) until the router knows the
        # channel: from then on Serve sees none of the load below.
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            response = httpx.post(
                f"{scaling_url}/v2/models/{model}/infer", json=_sleep_ms(0), timeout=30
            )
            assert response.status_code == 200
        assert _direct_requests(model) > 0
        assert _running(deployment) == 1
    stop = threading.Event()
    codes: list[int] = []

    def drive() -> None:
        codes.extend(asyncio.run(_load(scaling_url, model, 6, stop, 50_000)))

    loader = threading.Thread(target=drive)
    loader.start()
    try:
        # Six clients on a target of one request per replica: panic, up to three.
        # Generous: a new replica process starts slowly on a loaded machine.
        peak, deadline = 1, time.monotonic() + 120
        while peak < 2 and time.monotonic() < deadline:
            peak = max(peak, _running(deployment))
            time.sleep(0.5)
    finally:
        stop.set()
        loader.join(timeout=120)
    assert peak >= 2, "the version never scaled above its minimum under load"
    # Idle: the panic holds one stable window (4 s), the scale-down delay 2 s,
    # then replicas drain (at most one request deadline) and stop.
    deadline = time.monotonic() + 90
    while _running(deployment) > 1:
        assert time.monotonic() < deadline, "the version never scaled back down"
        time.sleep(1)
    assert codes and set(codes) == {200}, sorted(set(codes))
    if model == ELASTIC_DIRECT:
        # The replicas left ran what they got over the channel.
        assert _direct_requests(model) > 0
