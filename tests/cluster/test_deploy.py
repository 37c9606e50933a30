"""``serve deploy`` onto a real cluster: the demo config, then a canary added live.

The redeploy changes the application's args, so Serve builds the app again and
replaces every deployment's replicas; a client that keeps calling throughout must
never see a failure.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import numpy as np
import pytest
import tritonclient.http as triton_http

from rayfleet.cli.demo import digits_split
from rayfleet.platform.config.store import ModelStore
from tests.cluster.conftest import REPO, Cluster

pytestmark = pytest.mark.timeout(300)

DEMO = REPO / "configs" / "demo.yaml"
ROWS = digits_split()[1][:4]


def infer(
    client: triton_http.InferenceServerClient, version: str = ""
) -> tuple[np.ndarray, str]:
    """Labels for ``ROWS`` and the version that answered; ``version`` pins."""
    infer_input = triton_http.InferInput("input", list(ROWS.shape), "FP32")
    infer_input.set_data_from_numpy(ROWS, binary_data=True)
    result = client.infer(
        "digits",
        [infer_input],
        model_version=version,
        outputs=[triton_http.InferRequestedOutput("label", binary_data=True)],
    )
    return result.as_numpy("label"), result.get_response()["model_version"]


def client_for(cluster: Cluster) -> triton_http.InferenceServerClient:
    return triton_http.InferenceServerClient(
        cluster.url.removeprefix("http://"), network_timeout=60.0
    )


@pytest.fixture(scope="module")
def deployed(cluster: Cluster) -> Cluster:
    """configs/demo.yaml served by the cluster, with only its port changed."""
    cluster.serve("deploy", str(cluster.config(DEMO)))
    cluster.wait_running()
    return cluster


def test_demo_config_serves_every_version(deployed: Cluster) -> None:
    client = client_for(deployed)
    assert client.is_server_ready()
    assert set(client.get_model_metadata("digits")["versions"]) == {"v1", "v2", "v3"}
    for version in ("v1", "v2", "v3"):
        labels, answered = infer(client, version)
        assert answered == version
        assert labels.shape == (len(ROWS),)
    _, answered = infer(client)
    assert answered in {"v1", "v2"}


class Caller(threading.Thread):
    """Calls the unpinned infer route back to back until stopped."""

    def __init__(self, cluster: Cluster) -> None:
        super().__init__(daemon=True)
        self.cluster = cluster
        self.stopping = threading.Event()
        self.answered: list[tuple[float, str]] = []
        self.failures: list[str] = []

    def run(self) -> None:
        client = client_for(self.cluster)
        while not self.stopping.is_set():
            try:
                _, version = infer(client)
                self.answered.append((time.monotonic(), version))
            except Exception as error:
                self.failures.append(f"{type(error).__name__}: {error}")
            time.sleep(0.02)
        client.close()


def add_canary(config: dict[str, Any]) -> None:
    versions = config["applications"][0]["args"]["models"][0]["versions"]
    versions.append(
        {
            "name": "v4",
            "canary": True,
            "weight": 0,
            "num_cpus": 0.25,
            "autoscaling": {"min_replicas": 1, "max_replicas": 1},
        }
    )


def test_redeploy_adds_a_canary_without_failed_requests(deployed: Cluster) -> None:
    # The new version goes into the store first, as `rayfleet models push` puts
    # it there. Only the store under the cluster's working directory has it, so
    # the config's relative `store: build/models` must resolve there.
    ModelStore(str(deployed.store)).push(
        deployed.store / "digits" / "v2", "digits", "v4"
    )
    updated = deployed.config(DEMO, add_canary)

    caller = Caller(deployed)
    caller.start()
    try:
        time.sleep(2)
        deployed.serve("deploy", str(updated))
        deployed_at = time.monotonic()
        client = client_for(deployed)
        while "v4" not in client.get_model_metadata("digits")["versions"]:
            assert time.monotonic() < deployed_at + 120, "v4 never appeared"
            time.sleep(0.5)
        switched_at = time.monotonic()
        deployed.wait_running()
        # Keep calling a little after the switch, through the new replicas.
        time.sleep(3)
    finally:
        caller.stopping.set()
        caller.join(timeout=90)

    assert caller.failures == []
    # The caller was answered while Serve built and replaced the app, not only
    # before and after.
    during = [at for at, _ in caller.answered if deployed_at <= at <= switched_at]
    assert during, f"no answers in the {switched_at - deployed_at:.1f} s switch"
    assert {version for _, version in caller.answered} <= {"v1", "v2"}
    assert set(client.get_model_metadata("digits")["versions"]) == {
        "v1",
        "v2",
        "v3",
        "v4",
    }
    _, answered = infer(client, "v4")
    assert answered == "v4"
