"""Canary rollouts end to end: real traffic, real Validator, real webhooks.

One app runs digits v1 (stable, in the router) with v2 (good) and v3 (bad) as
canaries under short test windows: v2 must be promoted step by step and v3 rolled
back at its first step, with zero failed client requests and signed webhooks.
"""

from __future__ import annotations

import http.server
import json
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from ray import serve

from rayfleet.cli.demo import digits_split
from rayfleet.deployments.app import build
from rayfleet.platform.rollout.webhooks import SIGNATURE_HEADER, verify

from .conftest import ADMIN_TOKEN, WEBHOOK_SECRET, WEBHOOK_SECRET_ENV, delete_app

ROWS = digits_split()[1]


@dataclass
class Receiver:
    """A real HTTP endpoint that keeps every webhook delivery it gets."""

    url: str
    deliveries: list[tuple[dict[str, Any], bool]] = field(default_factory=list)

    def events(self) -> list[dict[str, Any]]:
        return [event for event, _ in self.deliveries]


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    received = Receiver(url="")

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["content-length"]))
            signed = verify(
                body, WEBHOOK_SECRET.encode(), self.headers.get(SIGNATURE_HEADER)
            )
            received.deliveries.append((json.loads(body), signed))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    received.url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield received
    server.shutdown()
    server.server_close()


def rollout_args(store: Path, models: list[dict[str, Any]], **extra: Any) -> dict:
    return {
        "store": str(store),
        "router": {"num_cpus": 0.1, "request_timeout_s": 10},
        "observations": {
            "bucket_s": 1,
            "flush_every_s": 0.2,
            "plan_poll_s": 0.3,
            "num_cpus": 0.1,
        },
        "models": models,
        **extra,
    }


@dataclass
class Client:
    """A client thread sending requests until stopped, counting what it gets,
    at ``rps`` or as fast as the answers come when they are slower."""

    url: str
    # A rollout step ends after min_requests_per_step canary requests: at 10%
    # of 150 requests/s, 100 of them take under 7 s.
    rps: float = 150.0
    statuses: Counter[int] = field(default_factory=Counter)
    versions: Counter[str] = field(default_factory=Counter)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        rng = np.random.default_rng(0)
        with httpx.Client(base_url=self.url, timeout=30) as client:
            deadline = time.monotonic() + 240
            due = time.monotonic()
            while not self.stop.is_set() and time.monotonic() < deadline:
                row = ROWS[rng.integers(len(ROWS))]
                body = {
                    "inputs": [
                        {
                            "name": "input",
                            "shape": [1, 64],
                            "datatype": "FP32",
                            "data": row.tolist(),
                        }
                    ]
                }
                try:
                    response = client.post("/v2/models/digits/infer", json=body)
                    self.statuses[response.status_code] += 1
                    self.versions[response.headers.get("x-model-version", "?")] += 1
                except httpx.HTTPError as error:
                    self.statuses[-1] += 1
                    print("client error", error)
                # Behind after a slow answer: go on from now, no catch-up burst.
                due = max(due + 1 / self.rps, time.monotonic())
                time.sleep(max(0.0, due - time.monotonic()))


def wait_for(condition: Any, timeout: float, what: str, show: Any | None = None) -> Any:
    """``condition()``'s first true value within ``timeout`` seconds; on a
    timeout, the failure names ``what`` and, when given, what ``show()`` says
    then (a rollout's state), so a rare failure in CI explains itself."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.5)
    detail = "" if show is None else f"; at the end: {show()!r}"
    raise AssertionError(f"timed out waiting for {what}{detail}")


def test_good_canary_promoted_bad_canary_rolled_back(
    serve_url: str, store: Path, receiver: Receiver
) -> None:
    args = rollout_args(
        store,
        [
            {
                "name": "digits",
                "rollout": {
                    "steps": [10, 50, 100],
                    "min_requests_per_step": 100,
                    "min_step_s": 2,
                    "evaluate_every_s": 0.5,
                    # A p99 over 40 requests on a shared 2-core machine is one
                    # scheduling hiccup; the p50 ratio still guards latency.
                    "gates": {"max_model_p99_ratio": None},
                },
                # The canaries share a pool (test_gates_under_load has them
                # in replicas of their own): a rollout does not care where a
                # version runs.
                "versions": [
                    {"name": "v1", "placement": "router"},
                    {"name": "v2", "canary": True, "placement": "pool", "pool": "c"},
                    {"name": "v3", "canary": True, "placement": "pool", "pool": "c"},
                ],
            }
        ],
        pools=[{"name": "c", "num_cpus": 0.1}],
        webhooks=[
            {"url": receiver.url, "secret_env": WEBHOOK_SECRET_ENV, "timeout_s": 2}
        ],
    )
    serve.run(build(args), name="canary", route_prefix="/canary")
    url = f"{serve_url}/canary"
    client = Client(url)
    thread = threading.Thread(target=client.run, daemon=True)
    thread.start()
    try:

        def finished() -> dict[str, str] | None:
            rollouts = httpx.get(f"{url}/-/rollouts", timeout=10).json()
            done = rollouts["digits"]["finished"]
            return done if len(done) == 2 else None

        done = wait_for(finished, 200, "both rollouts to finish")
    finally:
        client.stop.set()
        thread.join(timeout=60)
    rollbacks = [e["reason"] for e in receiver.events() if e["kind"] == "rolled_back"]
    assert done == {"v2": "promoted", "v3": "rolled_back"}, rollbacks
    assert set(client.statuses) == {200}, client.statuses
    assert client.versions["v2"] > 0

    rollouts = httpx.get(f"{url}/-/rollouts", timeout=10).json()["digits"]
    assert rollouts["stable"] == "v2"
    assert rollouts["plan"]["weights"]["v2"] == 100
    assert rollouts["plan"]["weights"]["v3"] == 0
    v3 = rollouts["rollout"]
    assert v3["canary_version"] == "v3" and v3["phase"] == "rolled_back"
    # Rolled back at its first step: it never went past 10% of traffic.
    assert max(entry["weight"] for entry in v3["history"]) == 10
    failing = [gate["name"] for gate in v3["gates"] if gate["verdict"] == "fail"]
    assert failing, v3["gates"]

    wait_for(
        lambda: {"promoted", "rolled_back"} <= {e["kind"] for e in receiver.events()},
        30,
        "the final webhooks",
    )
    assert all(signed for _, signed in receiver.deliveries)
    kinds = [(e["kind"], e["version"]) for e in receiver.events()]
    for expected in [
        ("rollout_started", "v2"),
        ("step_advanced", "v2"),
        ("promoted", "v2"),
        ("rollout_started", "v3"),
        ("rolled_back", "v3"),
    ]:
        assert expected in kinds, kinds
    delete_app("canary")


@pytest.fixture(scope="module")
def held_app(serve_url: str, store: Path) -> Iterator[str]:
    """A rollout that cannot advance on its own (it needs 10^6 requests)."""
    args = rollout_args(
        store,
        [
            {
                "name": "double",
                "rollout": {
                    "steps": [20, 100],
                    "min_requests_per_step": 1_000_000,
                    "evaluate_every_s": 0.5,
                },
                "versions": [
                    {"name": "v1", "num_cpus": 0.1},
                    {"name": "v2", "canary": True, "num_cpus": 0.1},
                ],
            }
        ],
    )
    double_v2 = store / "double" / "v2"
    if not double_v2.exists():
        import shutil

        shutil.copytree(store / "double" / "v1", double_v2)
    serve.run(build(args), name="held", route_prefix="/held")
    url = f"{serve_url}/held"
    wait_for(
        lambda: (
            httpx.get(f"{url}/-/rollouts", timeout=10).json()["double"]["rollout"][
                "phase"
            ]
            == "canary"
        ),
        90,
        "the held rollout to reach its first step",
    )
    yield url
    delete_app("held")


@pytest.mark.parametrize(
    "headers",
    [{}, {"authorization": "Bearer wrong"}, {"authorization": ADMIN_TOKEN}],
    ids=["no token", "wrong token", "not bearer"],
)
def test_admin_routes_need_the_bearer_token(
    held_app: str, headers: dict[str, str]
) -> None:
    before = httpx.get(f"{held_app}/-/rollouts").json()["double"]["rollout"]
    response = httpx.post(f"{held_app}/-/rollouts/double/rollback", headers=headers)
    assert response.status_code == 401
    assert "error" in response.json()
    after = httpx.get(f"{held_app}/-/rollouts").json()["double"]["rollout"]
    assert after["phase"] == before["phase"] == "canary"
    assert after["weight"] == before["weight"]


def _admin(url: str, action: str, body: dict[str, Any] | None = None) -> httpx.Response:
    return httpx.post(
        f"{url}/-/rollouts/double/{action}",
        headers={"authorization": f"Bearer {ADMIN_TOKEN}"},
        json=body,
        timeout=10,
    )


def test_killed_validator_resumes_the_rollout_and_serving_goes_on(
    held_app: str,
) -> None:
    import ray

    assert _admin(held_app, "pause").json()["rollout"]["phase"] == "paused"
    assert _admin(held_app, "pause").status_code == 409  # already paused

    statuses: Counter[int] = Counter()
    stop = threading.Event()

    def traffic() -> None:
        with httpx.Client(base_url=held_app, timeout=30) as client:
            while not stop.is_set():
                body = {
                    "inputs": [
                        {
                            "name": "x",
                            "shape": [1, 2],
                            "datatype": "FP32",
                            "data": [1, 2],
                        }
                    ]
                }
                statuses[
                    client.post("/v2/models/double/infer", json=body).status_code
                ] += 1
                time.sleep(0.02)

    thread = threading.Thread(target=traffic, daemon=True)
    thread.start()
    try:
        wait_for(
            lambda: (
                httpx.get(f"{held_app}/-/validation").json()["observations"]["ingested"]
                > 0
            ),
            30,
            "observations to reach the first Validator",
        )
        names = [
            actor["name"]
            for actor in ray.util.list_named_actors(all_namespaces=True)
            if "held#Validator#" in actor["name"]
        ]
        assert len(names) == 1, names
        ray.kill(ray.get_actor(names[0], namespace="serve"), no_restart=True)

        def back() -> dict[str, Any] | None:
            try:
                response = httpx.get(f"{held_app}/-/validation", timeout=5)
            except httpx.HTTPError:
                return None
            return response.json() if response.status_code == 200 else None

        snapshot = wait_for(back, 120, "the Validator to come back")
        # A new Validator: its counts start again, and grow with new traffic.
        wait_for(
            lambda: (back() or {}).get("observations", {}).get("ingested", 0) > 0,
            30,
            "observations to reach the new Validator",
        )
        assert snapshot["models"][0]["rollout"]["phase"] == "paused"
        assert snapshot["models"][0]["rollout"]["weight"] == 20
    finally:
        stop.set()
        thread.join(timeout=30)
    assert set(statuses) == {200}, statuses
    resumed = _admin(held_app, "resume").json()["rollout"]
    assert resumed["phase"] == "canary" and resumed["weight"] == 20
    # The CLI over the same admin API (the token comes from the environment).
    from rayfleet.cli.main import main

    assert main(["rollout", "weights", "--model", "double", "--weight", "60",
                 "--url", held_app]) == 0  # fmt: skip
    status = httpx.get(f"{held_app}/-/rollouts").json()["double"]["rollout"]
    assert status["weight"] == 60
    assert main(["rollout", "status", "--url", held_app]) == 0
