"""One Ray instance and one Serve app for every integration test.

Starting Ray costs seconds and the machines have two cores, so the session shares
one cluster, one store (the digits demo models plus small python test models) and
one application. Tests that need their own app deploy it under another name.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import tritonclient.grpc as triton_grpc
from tritonclient.utils import InferenceServerException

ray = pytest.importorskip("ray")
from ray import serve  # noqa: E402

from loadtest.common import free_port  # noqa: E402
from rayfleet.cli.demo import build_demo_store  # noqa: E402
from rayfleet.deployments.app import build  # noqa: E402
from rayfleet.deployments.serve_env import apply_serve_env, grpc_options  # noqa: E402
from tests.models import write_python_version  # noqa: E402

ADMIN_TOKEN_ENV = "RAYFLEET_ADMIN_TOKEN"
ADMIN_TOKEN = "test-admin-token-7f3a"
WEBHOOK_SECRET_ENV = "RAYFLEET_TEST_WEBHOOK_SECRET"
WEBHOOK_SECRET = "test-webhook-secret-91c2"


def delete_app(name: str) -> None:
    """Delete a test's own application without waiting for it to go.

    Serve keeps a direct-ingress router draining for a while
    (RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S, 2 s in this suite) so that
    HAProxy stops sending to it first; nothing here needs to wait for that.
    """
    serve.delete(name, _blocking=False)


def wait_ready(url: str, what: str, timeout_s: float = 120) -> None:
    """Wait until the rayfleet app at ``url`` says every version is ready."""
    deadline = time.monotonic() + timeout_s
    while httpx.get(f"{url}/v2/health/ready", timeout=10).status_code != 200:
        assert time.monotonic() < deadline, f"the {what} app never became ready"
        time.sleep(0.5)


def digits_body(rows: Any) -> dict[str, Any]:
    """A KServe v2 JSON request for the digits models."""
    return {
        "inputs": [
            {
                "name": "input",
                "shape": list(rows.shape),
                "datatype": "FP32",
                "data": rows.flatten().tolist(),
            }
        ]
    }


@pytest.fixture(scope="session")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("store")
    build_demo_store(str(root))
    write_python_version(root, "double", "v1")
    write_python_version(root, "sleepy", "v1")
    write_python_version(root, "slowstart", "v1", load_delay_s="4")
    write_python_version(root, "balanced", "v1")
    write_python_version(root, "elastic", "v1")
    return root


def app_args(store: Path, **router: Any) -> dict[str, Any]:
    """The shared test app: digits v1/v2/v3, the python test models, the image CNN."""
    small = {"num_cpus": 0.1}
    return {
        "store": str(store),
        "router": {
            "num_cpus": 0.1,
            "request_timeout_s": 5,
            "max_body_bytes": 1 << 20,
            **router,
        },
        "models": [
            {
                "name": "digits",
                "versions": [
                    # Stable runs inside the router; the canaries one hop away.
                    {"name": "v1", "placement": "router"},
                    {
                        "name": "v2",
                        "canary": True,
                        "weight": 10,
                        **small,
                        "batching": {"max_batch_size": 8, "batch_wait_timeout_s": 0.01},
                    },
                    {"name": "v3", "canary": True, "weight": 0, **small},
                ],
            },
            {
                "name": "double",
                "versions": [
                    {
                        "name": "v1",
                        **small,
                        "batching": {
                            "max_batch_size": 4,
                            "batch_wait_timeout_s": 0.005,
                        },
                        "max_ongoing_requests": 4,
                        "max_queued_requests": 4,
                    }
                ],
            },
            # The same model, for the deadline test: its slow request must not
            # hold up the replica the queue tests use.
            {"name": "sleepy", "versions": [{"name": "v1", **small}]},
            # The image CNN, in the router: no replica of its own to start.
            {
                "name": "image",
                "versions": [
                    {
                        "name": "v1",
                        "placement": "router",
                        "batching": {"max_batch_size": 2},
                    }
                ],
            },
        ],
    }


@pytest.fixture(scope="session")
def grpc_port() -> int:
    return free_port()


@pytest.fixture(scope="session")
def serve_url(store: Path, grpc_port: int) -> Iterator[str]:
    port = free_port()
    apply_serve_env()  # test what ships: HAProxy, direct ingress, gRPC handles
    # Ray's workers inherit this environment: the Validator reads both from it.
    os.environ[ADMIN_TOKEN_ENV] = ADMIN_TOKEN
    os.environ[WEBHOOK_SECRET_ENV] = WEBHOOK_SECRET
    # A stopping router replica keeps serving for this long so that an outside
    # load balancer stops sending to it first (30 s by default). Here HAProxy
    # is Serve's own and nothing outside depends on it: waiting 30 s at every
    # shutdown only slowed the suite.
    os.environ.setdefault("RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S", "2")
    # One GPU declared, none present: versions that ask for a GPU get placed and
    # meet a CPU-only onnxruntime, as on a GPU node with a broken CUDA.
    ray.init(num_cpus=8, num_gpus=1, include_dashboard=False, log_to_driver=False)
    serve.start(
        http_options={"host": "127.0.0.1", "port": port},
        grpc_options=grpc_options(grpc_port),
    )
    serve.run(build(app_args(store)), name="rayfleet", route_prefix="/")
    url = f"http://127.0.0.1:{port}"
    # Generous: on a loaded 2-core machine Ray itself can take a minute to start.
    wait_ready(url, "test", timeout_s=240)
    yield url
    serve.shutdown()
    ray.shutdown()


@pytest.fixture(scope="session")
def grpc_url(serve_url: str, grpc_port: int) -> str:
    """``host:port`` of the v2 gRPC service, once the shared app answers on it."""
    url = f"127.0.0.1:{grpc_port}"
    deadline = time.monotonic() + 60
    with triton_grpc.InferenceServerClient(url) as client:
        while True:
            with contextlib.suppress(InferenceServerException):
                if client.is_server_ready(headers={"application": "rayfleet"}):
                    return url
            assert time.monotonic() < deadline, "gRPC never answered"
            time.sleep(0.5)


@pytest.fixture
def http(serve_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=serve_url, timeout=30) as client:
        yield client
