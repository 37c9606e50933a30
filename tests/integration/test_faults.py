"""Processes killed under a request: what a client sees, on real Serve.

One app of its own (``/faults``): a python version in two replicas, whose slow
requests say which process runs them, and the Validator. Processes are killed by
pid with SIGKILL, as the OOM killer would (loadtest/chaos.py does the same under
load and times the recovery).
"""

from __future__ import annotations

import os
import signal
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from ray import serve

from loadtest.common import actor_pids
from rayfleet.deployments.app import build
from tests.models import write_python_version

from .conftest import delete_app, wait_ready

APP = "faults"

# y = 2x; a request with x >= 1000 first writes the replica's pid to the file
# named in the version's busy_file, then sleeps x - 1000 ms.
TELLING_MODEL = textwrap.dedent(
    """
    import os
    import time
    from pathlib import Path


    def load(version_dir):
        busy = Path(Path(version_dir, "busy_file").read_text())

        def predict(inputs):
            x = inputs["x"]
            slow = x[x >= 1000]
            if slow.size:
                busy.write_text(str(os.getpid()))
                time.sleep((float(slow.max()) - 1000) / 1000)
            return {"y": x * 2}

        return predict
    """
)


@pytest.fixture(scope="module")
def busy_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("faults") / "busy_pid"


@pytest.fixture(scope="module")
def faults_url(
    serve_url: str, tmp_path_factory: pytest.TempPathFactory, busy_file: Path
) -> Iterator[str]:
    root = tmp_path_factory.mktemp("faults-store")
    write_python_version(
        root, "tell", "v1", source=TELLING_MODEL, busy_file=str(busy_file)
    )
    args = {
        "store": str(root),
        "router": {"num_cpus": 0.1, "request_timeout_s": 30},
        # A restarted Validator takes seconds to be back: with a 1 s bound on a
        # forwarded page, /metrics is sure to answer 503 meanwhile.
        "observations": {"num_cpus": 0.1, "forward_timeout_s": 1},
        "models": [
            {
                "name": "tell",
                "versions": [
                    {
                        "name": "v1",
                        "num_cpus": 0.1,
                        "autoscaling": {"min_replicas": 2, "max_replicas": 2},
                    }
                ],
            }
        ],
    }
    serve.run(build(args), name=APP, route_prefix=f"/{APP}")
    url = f"{serve_url}/{APP}"
    wait_ready(url, "faults")
    yield url
    delete_app(APP)


def infer(url: str, x: float, model: str = "tell") -> httpx.Response:
    """``model`` (a python test model taking ``x``, 1x2) on ``[x, 0]``."""
    body = {
        "inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 2], "data": [x, 0]}]
    }
    return httpx.post(f"{url}/v2/models/{model}/infer", json=body, timeout=60)


def wait_busy(busy_file: Path) -> int:
    """The pid of the replica that started a slow request of ``TELLING_MODEL``."""
    deadline = time.monotonic() + 20
    while not busy_file.exists() or not busy_file.read_text():
        assert time.monotonic() < deadline, "the slow request never started"
        time.sleep(0.05)
    return int(busy_file.read_text())


def kill_the_replica_under_a_slow_request(
    infer: Callable[[float], httpx.Response], busy_file: Path, replicas: list[int]
) -> None:
    """Send a 3 s request, SIGKILL the replica running it, and check that
    another answered it in full. The model is ``TELLING_MODEL``, in the
    replicas ``replicas``."""
    busy_file.unlink(missing_ok=True)
    answers: list[httpx.Response] = []
    thread = threading.Thread(target=lambda: answers.append(infer(4000)))
    thread.start()
    victim = wait_busy(busy_file)
    assert victim in replicas
    os.kill(victim, signal.SIGKILL)
    thread.join(timeout=60)
    (answer,) = answers
    assert answer.status_code == 200, answer.text
    assert answer.json()["outputs"][0]["data"] == [8000, 0]
    # The request ran to the end once more, in the replica that was left.
    assert int(busy_file.read_text()) in set(replicas) - {victim}


def test_a_request_on_a_killed_replica_is_answered_by_another(
    faults_url: str, busy_file: Path
) -> None:
    replicas = actor_pids(f":{APP}:tell:v1")
    assert len(replicas) == 2, replicas
    kill_the_replica_under_a_slow_request(
        lambda x: infer(faults_url, x), busy_file, replicas
    )


def test_metrics_answer_503_while_the_validator_is_down(faults_url: str) -> None:
    (validator,) = actor_pids(f":{APP}:Validator")
    assert httpx.get(f"{faults_url}/metrics", timeout=10).status_code == 200
    os.kill(validator, signal.SIGKILL)
    statuses: list[int] = []
    down: httpx.Response | None = None
    deadline = time.monotonic() + 120
    # Poll until a 503 was seen and then /metrics answered again.
    while not (down is not None and statuses[-1] == 200):
        assert time.monotonic() < deadline, f"statuses seen: {set(statuses)}"
        response = httpx.get(f"{faults_url}/metrics", timeout=30)
        statuses.append(response.status_code)
        if response.status_code == 503 and down is None:
            down = response
        time.sleep(0.05)
    assert set(statuses) == {200, 503}, set(statuses)
    assert int(down.headers["retry-after"]) > 0
    assert down.headers["content-type"].startswith("application/json")
    assert "error" in down.json()
