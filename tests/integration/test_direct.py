"""``transport: direct`` on real Serve: the router reaches the replicas over the
channel they open, answers stay right, load spreads, and a killed replica's
request is answered by another, and one that Serve stops gracefully answers
what it is running first.

One app of its own (``/direct``): ``tell`` (the fault suite's model, which says
which process ran a slow request) in two replicas, and ``double`` (the doubling
test model, which fails on negative input) in one.
"""

from __future__ import annotations

import concurrent.futures
import copy
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
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
    wait_busy,
)

APP = "direct"
DIRECT = {"num_cpus": 0.05, "transport": "direct"}


@pytest.fixture(scope="module")
def busy_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("direct") / "busy_pid"


@pytest.fixture(scope="module")
def args(tmp_path_factory: pytest.TempPathFactory, busy_file: Path) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("direct-store")
    write_python_version(
        root, "tell", "v1", source=TELLING_MODEL, busy_file=str(busy_file)
    )
    write_python_version(root, "double", "v1")
    return {
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


@pytest.fixture(scope="module")
def url(serve_url: str, args: dict[str, Any]) -> Iterator[str]:
    serve.run(build(args), name=APP, route_prefix=f"/{APP}")
    base = f"{serve_url}/{APP}"
    wait_ready(base, APP)
    yield base
    delete_app(APP)


def replica_stats(model: str) -> list[dict[str, Any]]:
    """Every live replica's ``stats()``, asked through Serve's handle.

    A replica killed by an earlier test can still be on the handle's list for a
    moment; its answer is an ActorDiedError, left out like the replica itself.
    """
    handle = serve.get_deployment_handle(f"{model}:v1", APP)
    answers = handle.broadcast("stats").results(timeout_s=30, return_exceptions=True)
    return [answer for answer in answers if isinstance(answer, dict)]


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


def test_a_replica_stopped_by_a_redeploy_answers_its_running_request(
    url: str, args: dict[str, Any], busy_file: Path
) -> None:
    wait_direct(url, "tell", replicas=2)
    replicas = actor_pids(f":{APP}:tell:v1")
    busy_file.unlink(missing_ok=True)
    answers: list[httpx.Response] = []
    # 15 s: Serve replaces the two replicas one at a time, each in a few
    # seconds, so whichever the victim is, it is stopped while this runs (the
    # old code answered 503 here: the resend met the other stopping replica).
    thread = threading.Thread(target=lambda: answers.append(infer(url, 16000)))
    thread.start()
    victim = wait_busy(busy_file)
    assert victim in replicas
    # A new spec replaces every replica; Serve stops the old ones gracefully
    # while the request runs. Serve does not count calls on the channel, so
    # without the replica's own drain it would be cut and run again elsewhere.
    changed = copy.deepcopy(args)
    changed["models"][0]["versions"][0]["num_cpus"] = 0.06
    # Serve stops an old replica before it starts its replacement, and returns
    # once the new ones serve: here, after the victim's drain.
    serve.run(build(changed), name=APP, route_prefix=f"/{APP}")
    thread.join(timeout=60)
    (answer,) = answers
    assert answer.status_code == 200, answer.text
    assert answer.json()["outputs"][0]["data"] == [32000, 0]
    assert int(busy_file.read_text()) == victim, "the request ran again elsewhere"
    # And the replica did stop: the drain above happened on its way out.
    deadline = time.monotonic() + 30
    while victim in actor_pids(f":{APP}:tell:v1"):
        assert time.monotonic() < deadline, "the old replica never stopped"
        time.sleep(0.5)
