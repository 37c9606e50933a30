"""A version that asks for a GPU on a machine whose onnxruntime has no CUDA.

The integration Ray declares one GPU (there is none), so Serve places a replica
with ``num_gpus`` and the replica meets exactly what a GPU node with the CPU-only
onnxruntime, or a broken CUDA, gives it. Without ``require_gpu`` it serves on CPU
and says so (``tests/cluster/test_multinode.py`` reads that from /metrics); with
it, the replica never starts and the deploy names the reason.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from ray import serve

from rayfleet.deployments.app import build

from .conftest import delete_app

APP = "strictgpu"


def test_require_gpu_fails_the_deploy_with_the_reason(
    store: Path, serve_url: str
) -> None:
    del serve_url  # the shared Ray, which declares the GPU
    args = {
        "store": str(store),
        "router": {"num_cpus": 0.1},
        "observations": {"enabled": False},
        "models": [
            {
                "name": "digits",
                "versions": [
                    {
                        "name": "v2",
                        "num_cpus": 0.1,
                        "num_gpus": 0.25,
                        "require_gpu": True,
                    }
                ],
            }
        ],
    }
    try:
        with pytest.raises(RuntimeError, match=r"digits:v2"):
            serve.run(build(args), name=APP, route_prefix=f"/{APP}")
        # The application says which deployment failed, the deployment why.
        status = serve.status().applications[APP].deployments["digits:v2"]
    finally:
        delete_app(APP)
    assert status.status == "DEPLOY_FAILED"
    assert "digits/v2 asked for a GPU" in status.message
    assert "sets require_gpu" in status.message
