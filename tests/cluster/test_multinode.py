"""rayfleet beyond one machine, on a fake multi-node cluster built from cluster.yaml.

Ray's fake multi-node provider (see ``fake_cluster``) gives a CPU head and GPU
worker types as the shipped ``cluster.yaml`` declares them, with a real
autoscaler that adds and removes worker nodes. ``configs/gpu.yaml`` is deployed
onto it with what a 2-core machine needs changed (``edit_gpu_config``), plus
``sleepy``: a model whose requests take 50 ms, so that a few clients hold enough
requests in flight to need more replicas than one GPU node holds.

Everything is read from Ray's own view (the dashboard's node list and Serve's
application details, node ids included), never from rayfleet's. The tests run in
order on one cluster: placement, scale-out, node loss, scale-in. Each records its
seconds; ``RAYFLEET_MULTINODE_REPORT=path`` writes them as JSON (the figures in
loadtest/RESULTS.md come from there).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from loadtest.common import free_port
from tests.cluster.conftest import REPO, Cluster, ray_head
from tests.cluster.fake_cluster import (
    autoscaling_config,
    head_args,
    scaled_cpus,
)
from tests.models import write_python_version

pytestmark = pytest.mark.timeout(300)

GPU_CONFIG = REPO / "configs" / "gpu.yaml"
CLUSTER_YAML = REPO / "cluster.yaml"
SLEEPY = "sleepy:v1"
SLEEPY_BODY = {"inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP32",
                           "data": [1050.0, 1050.0]}]}  # fmt: skip
DIGITS_BODY = {"inputs": [{"name": "input", "shape": [1, 64], "datatype": "FP32",
                           "data": [0.0] * 64}]}  # fmt: skip
# Closed-loop clients of sleepy: about 13 of 16 are in flight at the replicas at
# a time (the rest between requests), over a target of 3 per replica: more than
# sleepy's max_replicas of 4, three more than fit beside digits on a GPU node.
SLEEPY_CLIENTS = 16
DEADLINE_S = 120
REPORT: dict[str, Any] = {}


@pytest.fixture(scope="module")
def fake(
    demo_store: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Cluster]:
    """The fake cluster, head and one GPU worker (cluster.yaml's min_workers)."""
    store = tmp_path_factory.mktemp("multinode-store")
    shutil.copytree(demo_store, store, dirs_exist_ok=True)
    write_python_version(store, "sleepy", "v1")
    gcs_port = free_port()
    config = autoscaling_config(
        yaml.safe_load(CLUSTER_YAML.read_text()), f"127.0.0.1:{gcs_port}"
    )
    path = tmp_path_factory.mktemp("autoscaler") / "fake.yaml"
    path.write_text(yaml.safe_dump(config))
    # The fake provider refuses to run without RAY_FAKE_CLUSTER; the autoscaler
    # looks at demand every second instead of every five.
    env = {
        "RAY_FAKE_CLUSTER": "1",
        "AUTOSCALER_UPDATE_INTERVAL_S": "1",
    }
    args = ["--node-ip-address=127.0.0.1", f"--autoscaling-config={path}"]
    with ray_head(store, [*args, *head_args(config)], env, gcs_port) as cluster:
        yield cluster
    if target := os.environ.get("RAYFLEET_MULTINODE_REPORT"):
        Path(target).write_text(json.dumps(REPORT, indent=2))


def edit_gpu_config(config: dict[str, Any]) -> None:
    """configs/gpu.yaml as this machine can run it.

    The proxy runs on the head only: fake nodes share one network, where every
    node's proxy would want port 8000. CPU requests scale with the nodes' CPUs.
    sleepy is added with short autoscaling windows (stable 6 s instead of 60).
    """
    config["proxy_location"] = "HeadOnly"
    args = config["applications"][0]["args"]
    args["store"] = "build/models"
    args["router"]["num_cpus"] = scaled_cpus(args["router"]["num_cpus"])
    for model in args["models"]:
        for version in model["versions"]:
            version["num_cpus"] = scaled_cpus(version.get("num_cpus", 1))
    windows = {"stable_window_s": 6, "panic_window_s": 2, "scale_down_delay_s": 3}
    sleepy = {
        "name": "v1",
        "num_cpus": scaled_cpus(0.5),
        "num_gpus": 0.25,
        "autoscaling": {"max_replicas": 4, "target_ongoing_requests": 3, **windows},
    }
    args["models"].append({"name": "sleepy", "versions": [sleepy]})


# --- Ray's view -----------------------------------------------------------------


def api(cluster: Cluster, path: str) -> Any:
    """GET a dashboard API path with the cluster's token."""
    response = httpx.get(
        cluster.dashboard + path,
        headers={"authorization": f"Bearer {cluster.env['RAY_AUTH_TOKEN']}"},
        timeout=30,
    )
    response.raise_for_status()
    return response.json()


def alive_nodes(cluster: Cluster) -> list[dict[str, Any]]:
    """Every ALIVE node: id, labels, declared resources, head or not."""
    found = api(cluster, "/api/v0/nodes?detail=1&limit=100")["data"]["result"]
    return [node for node in found["result"] if node["state"] == "ALIVE"]


def gpu_node_ids(cluster: Cluster) -> set[str]:
    return {
        node["node_id"]
        for node in alive_nodes(cluster)
        if node["resources_total"].get("GPU", 0) > 0
    }


@dataclass
class Deployment:
    """One deployment as Serve reports it: what it asks for and where it runs."""

    target: int
    num_gpus: float
    running: list[str]  # node ids of RUNNING replicas, one entry per replica
    replicas: dict[str, str]  # replica id: node id, RUNNING ones


def deployments(cluster: Cluster) -> dict[str, Deployment]:
    details = api(cluster, "/api/serve/applications/")["applications"]["rayfleet"]
    found = {}
    for name, deployment in details["deployments"].items():
        options = deployment["deployment_config"]["ray_actor_options"]
        found[name] = Deployment(
            target=deployment["target_num_replicas"],
            num_gpus=options.get("num_gpus") or 0.0,
            running=[
                replica["node_id"]
                for replica in deployment["replicas"]
                if replica["state"] == "RUNNING"
            ],
            replicas={
                replica["replica_id"]: replica["node_id"]
                for replica in deployment["replicas"]
                if replica["state"] == "RUNNING"
            },
        )
    return found


def wait_for(
    what: str, check: Callable[[], bool], timeout: float = DEADLINE_S
) -> float:
    """Poll ``check`` until true; the seconds it took."""
    start = time.monotonic()
    while not check():
        assert time.monotonic() - start < timeout, f"{what}: not within {timeout} s"
        time.sleep(0.5)
    return round(time.monotonic() - start, 1)


# --- load -----------------------------------------------------------------------


@dataclass
class Load:
    """Closed-loop clients posting one body to one path until stopped."""

    url: str
    body: dict[str, Any]
    clients: int
    # (when it ended, status or error, seconds it took) per request
    outcomes: list[tuple[float, str, float]] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    threads: list[threading.Thread] = field(default_factory=list)

    def start(self) -> Load:
        for _ in range(self.clients):
            thread = threading.Thread(target=self._client, daemon=True)
            thread.start()
            self.threads.append(thread)
        return self

    def _client(self) -> None:
        # Bounded: a load nobody stops ends by itself.
        ends = time.monotonic() + 280
        with httpx.Client(timeout=60) as client:
            while not self.stop.is_set() and (sent := time.monotonic()) < ends:
                try:
                    status = str(client.post(self.url, json=self.body).status_code)
                except httpx.HTTPError as error:
                    status = type(error).__name__
                done = time.monotonic()
                self.outcomes.append((done, status, done - sent))

    def close(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=70)

    def between(self, start: float, end: float) -> dict[str, Any]:
        """Statuses of the requests that ended in ``[start, end)``, and the
        longest any of them took."""
        window = [(s, took) for at, s, took in self.outcomes if start <= at < end]
        return {
            "statuses": dict(Counter(status for status, _ in window)),
            "longest_s": round(max((took for _, took in window), default=0.0), 2),
        }


@pytest.fixture(scope="module")
def deployed(fake: Cluster) -> Iterator[Cluster]:
    started = time.monotonic()
    fake.serve("deploy", str(fake.config(GPU_CONFIG, edit_gpu_config)))
    fake.wait_running()
    REPORT["deploy_s"] = round(time.monotonic() - started, 1)
    yield fake


# --- the tests, in order ----------------------------------------------------------


def test_placement_follows_declared_resources_and_labels(deployed: Cluster) -> None:
    nodes = alive_nodes(deployed)
    (head,) = [node["node_id"] for node in nodes if node["is_head_node"]]
    gpus = gpu_node_ids(deployed)
    assert len(gpus) == 1, "cluster.yaml keeps one GPU worker (min_workers: 1)"
    found = deployments(deployed)
    # Routers and the Validator select the head's label.
    for name in ("Router", "Validator"):
        assert found[name].running, name
        assert set(found[name].running) == {head}, name
    # Every replica that asks for a GPU is on a GPU node, never on the head.
    on_gpu = {name: d for name, d in found.items() if d.num_gpus > 0}
    assert set(on_gpu) == {"digits:v1", "digits:v2", SLEEPY}
    for name, deployment in on_gpu.items():
        assert deployment.running and set(deployment.running) <= gpus, name
    # Four replicas at num_gpus 0.25 share the one GPU node: 2 + 1 + 1.
    quarter = Counter(
        node
        for deployment in on_gpu.values()
        if deployment.num_gpus == 0.25
        for node in deployment.running
    )
    assert list(quarter.values()) == [4]


def replica_info(cluster: Cluster) -> dict[str, dict[str, str]]:
    """``rayfleet_replica_info`` labels from rayfleet's /metrics, by replica id."""
    text = httpx.get(f"{cluster.url}/metrics", timeout=30).text
    return {
        sample.labels["replica"]: sample.labels
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "rayfleet_replica_info"
    }


def test_a_gpu_replica_on_cpu_is_visible_in_metrics(deployed: Cluster) -> None:
    """The fake GPU nodes have no CUDA: every GPU replica falls back to CPU (or
    runs python), and /metrics says so, on the node Serve put it on."""
    on_gpu = {name: d for name, d in deployments(deployed).items() if d.num_gpus > 0}
    wanted = {replica for d in on_gpu.values() for replica in d.replicas}

    def reported() -> bool:
        return wanted <= set(replica_info(deployed))

    # Replicas report every replica_report_s (5 s by default).
    wait_for("every GPU replica in rayfleet_replica_info", reported, timeout=30)
    info = replica_info(deployed)
    for name, deployment in on_gpu.items():
        provider = "python" if name == SLEEPY else "CPUExecutionProvider"
        for replica, node in deployment.replicas.items():
            assert info[replica]["gpu_requested"] == "true", info[replica]
            assert info[replica]["provider"] == provider, info[replica]
            assert info[replica]["node_id"] == node, info[replica]


def sleepy_load(cluster: Cluster) -> Load:
    url = f"{cluster.url}/v2/models/sleepy/infer"
    return Load(url, SLEEPY_BODY, SLEEPY_CLIENTS).start()


def scale_out(cluster: Cluster) -> tuple[str, str, dict[str, float]]:
    """Wait for sleepy's load to add a GPU node and serve there: the first GPU
    node, the new one, and the seconds each step took."""
    (first,) = gpu_node_ids(cluster)
    started = time.monotonic()
    steps = {
        "serve_wants_more_s": wait_for(
            "sleepy's target above 1", lambda: deployments(cluster)[SLEEPY].target > 1
        ),
        "node_alive_s": wait_for(
            "a second GPU node", lambda: len(gpu_node_ids(cluster)) == 2
        ),
    }
    (second,) = gpu_node_ids(cluster) - {first}

    def serving_on_second() -> bool:
        sleepy = deployments(cluster)[SLEEPY]
        return len(sleepy.running) == sleepy.target == 4 and second in sleepy.running

    steps["replicas_running_s"] = wait_for("sleepy on the new node", serving_on_second)
    steps["total_s"] = round(time.monotonic() - started, 1)
    return first, second, steps


def test_load_adds_a_gpu_node_and_the_new_replicas_serve_there(
    deployed: Cluster,
) -> None:
    load = sleepy_load(deployed)
    try:
        first, second, steps = scale_out(deployed)
    finally:
        load.close()
    REPORT["scale_out"] = steps
    # Three new replicas where there is room, none more on the full node.
    assert Counter(deployments(deployed)[SLEEPY].running) == {first: 1, second: 3}
    assert steps["total_s"] - steps["serve_wants_more_s"] < 60, (
        "the new replicas serve within 60 s of the demand"
    )


def test_idle_replicas_and_then_the_idle_node_go_away(deployed: Cluster) -> None:
    # The load of the test before has stopped. Serve stops the replicas on the
    # node with the fewest replicas first, which empties the new node.
    started = time.monotonic()
    REPORT["scale_in"] = steps = {
        "replicas_gone_s": wait_for(
            "sleepy back to one replica",
            lambda: len(deployments(deployed)[SLEEPY].running) == 1,
        ),
        "node_gone_s": wait_for(
            "one GPU node left", lambda: len(gpu_node_ids(deployed)) == 1
        ),
    }
    steps["total_s"] = round(time.monotonic() - started, 1)


def raylet_of(node_id: str) -> psutil.Process:
    """The raylet process of a node of this machine's fake cluster."""
    for process in psutil.process_iter(["name", "cmdline"]):
        command = process.info["cmdline"] or []
        if (
            "raylet" in (process.info["name"] or "")
            and f"--node_id={node_id}" in command
        ):
            return process
    raise AssertionError(f"no raylet for node {node_id}")


def test_a_spread_version_survives_a_node_loss(deployed: Cluster) -> None:
    sleepy = sleepy_load(deployed)
    digits = Load(f"{deployed.url}/v2/models/digits/infer", DIGITS_BODY, 2).start()
    try:
        # sleepy spreads over both GPU nodes, digits is all on the first.
        victim, _, _ = scale_out(deployed)
        assert set(deployments(deployed)["digits:v1"].running) == {victim}
        time.sleep(2)
        killed = time.monotonic()
        raylet_of(victim).send_signal(signal.SIGKILL)

        def back(*names: str) -> Callable[[], bool]:
            def check() -> bool:
                found = deployments(deployed)
                return all(
                    len(found[name].running) == found[name].target
                    and victim not in found[name].running
                    for name in names
                )

            return check

        sleepy_s = wait_for("sleepy back to 4 replicas", back(SLEEPY))
        digits_s = wait_for("digits back", back("digits:v1", "digits:v2"))
        time.sleep(2)
        ended = time.monotonic()
    finally:
        sleepy.close()
        digits.close()
    spread = sleepy.between(killed, ended)
    REPORT["node_loss"] = {
        "sleepy (spread)": {**spread, "capacity_back_s": sleepy_s},
        "digits (all on the node)": {
            **digits.between(killed, ended),
            "capacity_back_s": round(sleepy_s + digits_s, 1),
        },
    }
    # At most the requests in flight on the killed node's one sleepy replica
    # (the router sends those again, so usually none).
    failed = sum(n for status, n in spread["statuses"].items() if status != "200")
    assert failed <= 4, spread
    assert sleepy_s < 60, "the spread version is back to full capacity in 60 s"
