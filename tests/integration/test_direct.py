"""``transport: direct`` on real Serve: the router reaches the replicas over the
channel they open, answers stay right, load spreads, and a killed replica's
request is answered by another.

One app of its own (``/direct``): ``tell`` (the fault suite's model, which says
which process ran a slow request) in two replicas, and ``double`` (the doubling
test model, which fails on negative input) in one.
"""

from __future__ import annotations

import concurrent.futures
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from ray import serve

from loadtest.common import actor_pids
from rayfleet.deployments.app import build
from tests.models import write_python_version

from .conftest import delete_app, wait_ready
from .test_faults import (
    TELLING_MODEL,
    infer,
    kill_the_replica_under_a_slow_request,
)

APP = "direct"
DIRECT = {"num_cpus": 0.05, "transport": "direct"}


@pytest.fixture(scope="module")
def busy_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("direct") / "busy_pid"


@pytest.fixture(scope="module")
def url(
    serve_url: str, tmp_path_factory: pytest.TempPathFactory, busy_file: Path
) -> Iterator[str]:
    root = tmp_path_factory.mktemp("direct-store")
    write_python_version(
        root, "tell", "v1", source=TELLING_MODEL, busy_file=str(busy_file)
    )
    write_python_version(root, "double", "v1")
    args = {
        "store": str(root),
        "router": {"num_cpus": 0.05, "request_timeout_s": 30},
        "observations": {"enabled": False},
        "models": [
            {
                "name": "tell",
                "versions": [
                    {
                        "name": "v1",
                        **DIRECT,
                        "autoscaling": {"min_replicas": 2, "max_replicas": 2},
                    }
                ],
            },
            {
                "name": "double",
                "versions": [
                    {
                        "name": "v1",
                        **DIRECT,
                        "batching": {"max_batch_size": 8, "batch_wait_timeout_s": 0.02},
                    }
                ],
            },
        ],
    }
    serve.run(build(args), name=APP, route_prefix=f"/{APP}")
    base = f"{serve_url}/{APP}"
    wait_ready(base, APP)
    yield base
    delete_app(APP)


def replica_stats(model: str) -> list[dict[str, Any]]:
    """Every replica's ``stats()``, asked through Serve's handle."""
    handle = serve.get_deployment_handle(f"{model}:v1", APP)
    return list(handle.broadcast("stats").results(timeout_s=30))


def direct_requests(model: str) -> list[int]:
    return sorted(int(s["direct_requests"]) for s in replica_stats(model))


def wait_direct(url: str, model: str, replicas: int) -> None:
    """Send requests until every replica has run one over its channel: the
    router learns the channels about a second after its first request."""
    deadline = time.monotonic() + 30
    while min(direct_requests(model), default=0) == 0 or (
        len(direct_requests(model)) < replicas
    ):
        assert time.monotonic() < deadline, replica_stats(model)
        for _ in range(8):
            assert infer(url, 1, model).status_code == 200
        time.sleep(0.2)


def test_every_request_takes_the_channel_and_load_spreads(url: str) -> None:
    wait_direct(url, "tell", replicas=2)
    before = replica_stats("tell")
    xs = list(range(100))
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda x: infer(url, x, "tell"), xs))
    for x, answer in zip(xs, answers, strict=True):
        assert answer.status_code == 200, answer.text
        assert answer.json()["outputs"][0]["data"] == [2 * x, 0]
    after = replica_stats("tell")
    grown = sorted(
        a["direct_requests"] - b["direct_requests"]
        for a, b in zip(
            sorted(after, key=lambda s: s["warm_s"]),
            sorted(before, key=lambda s: s["warm_s"]),
            strict=True,
        )
    )
    # All of them over the channel, none through the handle, on both replicas.
    assert sum(grown) == 100
    assert sum(a["requests"] for a in after) - sum(b["requests"] for b in before) == 100
    assert grown[0] >= 10, grown


def test_a_failing_request_fails_alone_in_its_batch(url: str) -> None:
    wait_direct(url, "double", replicas=1)
    xs = [1.0, 2.0, -1.0, 3.0, 4.0, 5.0, 6.0, 7.0]
    with concurrent.futures.ThreadPoolExecutor(len(xs)) as pool:
        answers = list(pool.map(lambda x: infer(url, x, "double"), xs))
    for x, answer in zip(xs, answers, strict=True):
        if x < 0:
            assert answer.status_code == 500, answer.text
            assert "error" in answer.json()
        else:
            assert answer.status_code == 200, answer.text
            assert answer.json()["outputs"][0]["data"] == [2 * x, 0]
    assert infer(url, 8, "double").status_code == 200


def test_a_request_on_a_killed_replica_is_answered_by_another(
    url: str, busy_file: Path
) -> None:
    wait_direct(url, "tell", replicas=2)
    replicas = actor_pids(f":{APP}:tell:v1")
    assert len(replicas) == 2, replicas
    kill_the_replica_under_a_slow_request(
        lambda x: infer(url, x, "tell"), busy_file, replicas
    )
    # And the requests after it are answered while Serve replaces the victim.
    for x in range(20):
        assert infer(url, x, "tell").status_code == 200
