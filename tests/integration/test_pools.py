"""Versions in shared pools on real Serve: loaded on a first request, routed to
the replica that holds them, evicted and reloaded, unloaded when idle.

One app, two pools. ``duo`` (two replicas) holds digits v2 and a python model
that takes two seconds to load; ``solo`` (one replica, at most two versions
loaded, idle versions unloaded after 10 s) holds digits v3 and two python models,
so a third version evicts the least recently used one.
"""

from __future__ import annotations

import concurrent.futures
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import onnxruntime as ort
import pytest
from prometheus_client.parser import text_string_to_metric_families
from ray import serve

from rayfleet.cli.demo import digits_split
from rayfleet.deployments.app import build
from tests.models import write_python_version

from .conftest import delete_app, digits_body, wait_ready

APP, PREFIX = "pools", "/pools"
ROWS = digits_split()[1][:8]
IDLE_S = 10.0
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def pool_args(store: Path) -> dict[str, Any]:
    small = {"num_cpus": 0.05}
    return {
        "store": str(store),
        "router": {"num_cpus": 0.05, "request_timeout_s": 20},
        "observations": {"num_cpus": 0.05, "replica_report_s": 0.5},
        "pools": [
            {
                "name": "duo",
                **small,
                "autoscaling": {"min_replicas": 2, "max_replicas": 2},
            },
            {
                "name": "solo",
                **small,
                "max_loaded_versions": 2,
                "unload_after_s": IDLE_S,
            },
        ],
        "models": [
            {
                "name": "digits",
                "versions": [
                    {"name": "v1", "placement": "router"},
                    {"name": "v2", "weight": 0, "placement": "pool", "pool": "duo"},
                    {"name": "v3", "weight": 0, "placement": "pool", "pool": "solo"},
                ],
            },
            {
                "name": "slowload",
                "versions": [{"name": "v1", "placement": "pool", "pool": "duo"}],
            },
            {
                "name": "tenant",
                "versions": [
                    {"name": "a", "placement": "pool", "pool": "solo"},
                    {"name": "b", "weight": 0, "placement": "pool", "pool": "solo"},
                ],
            },
        ],
    }


@pytest.fixture(scope="module")
def url(serve_url: str, store: Path) -> Iterator[str]:
    write_python_version(store, "slowload", "v1", load_delay_s="2")
    write_python_version(store, "tenant", "a")
    write_python_version(store, "tenant", "b")
    serve.run(build(pool_args(store)), name=APP, route_prefix=PREFIX)
    base = f"{serve_url}{PREFIX}"
    wait_ready(base, "pools")
    yield base
    delete_app(APP)


def digits(url: str, version: str) -> np.ndarray:
    response = httpx.post(
        f"{url}/v2/models/digits/versions/{version}/infer",
        json=digits_body(ROWS),
        timeout=30,
    )
    assert response.status_code == 200, response.text
    (label,) = [o for o in response.json()["outputs"] if o["name"] == "label"]
    return np.array(label["data"])


def onnx_labels(store: Path, version: str) -> np.ndarray:
    session = ort.InferenceSession(str(store / "digits" / version / "model.onnx"))
    return np.asarray(session.run(["label"], {"input": ROWS})[0])


def double(url: str, model: str, version: str, value: float = 1.5) -> None:
    body = {
        "inputs": [
            {"name": "x", "shape": [1, 2], "datatype": "FP32", "data": [value] * 2}
        ]
    }
    response = httpx.post(
        f"{url}/v2/models/{model}/versions/{version}/infer", json=body, timeout=30
    )
    assert response.status_code == 200, response.text
    assert response.json()["outputs"][0]["data"] == [value * 2] * 2


def samples(url: str) -> Samples:
    response = httpx.get(f"{url}/metrics", timeout=10)
    assert response.status_code == 200
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def pool_total(found: Samples, name: str, pool: str, **labels: str) -> float:
    """``name`` summed over the pool's replicas, for series with ``labels``."""
    return sum(
        value
        for (metric, pairs), value in found.items()
        if metric == name
        and dict(pairs).get("pool") == pool
        and all(dict(pairs).get(k) == v for k, v in labels.items())
    )


def holders(found: Samples, pool: str, model: str, version: str) -> set[str]:
    """The replicas of ``pool`` that report ``model``/``version`` loaded."""
    return {
        dict(pairs)["replica"]
        for (metric, pairs), value in found.items()
        if metric == "rayfleet_pool_version_loaded"
        and value == 1
        and dict(pairs)["pool"] == pool
        and (dict(pairs)["model"], dict(pairs)["version"]) == (model, version)
    }


def settled(url: str, check: Any, timeout: float = 20) -> Samples:
    """The metrics once ``check(samples)`` holds (reports arrive every 0.5 s)."""
    deadline = time.monotonic() + timeout
    while True:
        found = samples(url)
        if check(found):
            return found
        assert time.monotonic() < deadline, "the pool reports never showed it"
        time.sleep(0.5)


def test_pooled_versions_answer_like_onnxruntime(url: str, store: Path) -> None:
    np.testing.assert_array_equal(digits(url, "v2"), onnx_labels(store, "v2"))
    np.testing.assert_array_equal(digits(url, "v3"), onnx_labels(store, "v3"))


def test_concurrent_first_requests_load_once_per_replica(url: str) -> None:
    before = samples(url)
    with concurrent.futures.ThreadPoolExecutor(12) as pool:
        list(pool.map(lambda _: double(url, "slowload", "v1"), range(12)))

    def loaded(found: Samples) -> bool:
        return bool(holders(found, "duo", "slowload", "v1"))

    after = settled(url, loaded)
    loads = pool_total(after, "rayfleet_pool_loads_total", "duo") - pool_total(
        before, "rayfleet_pool_loads_total", "duo"
    )
    waits = pool_total(after, "rayfleet_pool_load_waits_total", "duo") - pool_total(
        before, "rayfleet_pool_load_waits_total", "duo"
    )
    # Serve may send some of the burst to the second replica before it hears
    # that the first one is loading; within a replica, one load serves all.
    assert 1 <= loads <= 2, loads
    assert waits >= 12 - loads, waits


def test_routing_prefers_the_replica_that_holds_the_version(url: str) -> None:
    digits(url, "v2")
    found = settled(url, lambda f: bool(holders(f, "duo", "digits", "v2")))
    (holder,) = holders(found, "duo", "digits", "v2")
    key = "rayfleet_replica_requests_total"

    def served(found: Samples) -> dict[str, float]:
        return {
            dict(pairs)["replica"]: value
            for (metric, pairs), value in found.items()
            if metric == key
            and dict(pairs)["model"] == "digits"
            and dict(pairs)["version"] == "v2"
        }

    before = served(found)
    for _ in range(20):
        digits(url, "v2")
    after = settled(url, lambda f: sum(served(f).values()) >= sum(before.values()) + 20)
    grew = {r for r, value in served(after).items() if value > before.get(r, 0)}
    assert grew == {holder}, (before, served(after))
    assert holders(after, "duo", "digits", "v2") == {holder}


def test_lru_eviction_then_reload_answers_right_then_idle_unload(
    url: str, store: Path
) -> None:
    expected = onnx_labels(store, "v3")
    double(url, "tenant", "a")
    np.testing.assert_array_equal(digits(url, "v3"), expected)
    # Both held and warm; v3 becomes the least recently used a moment before b
    # arrives, so a slow load of a cannot leave it idle past unload_after_s.
    double(url, "tenant", "a")
    # A third version in a pool of two: v3, the least recently used, goes.
    double(url, "tenant", "b")
    found = settled(
        url, lambda f: pool_total(f, "rayfleet_pool_unloads_total", "solo") >= 1
    )
    assert pool_total(found, "rayfleet_pool_unloads_total", "solo", reason="count") >= 1
    assert not holders(found, "solo", "digits", "v3")
    assert pool_total(found, "rayfleet_pool_loaded_versions", "solo") <= 2

    # Its next request loads it again, and it answers as before.
    loads = pool_total(found, "rayfleet_pool_loads_total", "solo")
    np.testing.assert_array_equal(digits(url, "v3"), expected)
    found = settled(url, lambda f: bool(holders(f, "solo", "digits", "v3")))
    assert pool_total(found, "rayfleet_pool_loads_total", "solo") == loads + 1

    # No traffic for unload_after_s: every version goes; the replica stays.
    idle = settled(
        url,
        lambda f: pool_total(f, "rayfleet_pool_loaded_versions", "solo") == 0,
        timeout=IDLE_S + 15,
    )
    assert pool_total(idle, "rayfleet_pool_unloads_total", "solo", reason="idle") >= 2
    double(url, "tenant", "a")
