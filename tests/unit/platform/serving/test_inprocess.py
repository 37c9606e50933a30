"""Versions placed in the router: batched and run off the event loop, as in a
replica of their own."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np

from rayfleet.platform.config.signature import Signature, TensorSpec
from rayfleet.platform.config.spec import parse_spec
from rayfleet.platform.config.store import ModelStore
from rayfleet.platform.serving.inprocess import InProcessBackend, load_runners
from tests.models import write_python_version

# Sums each row, logs every batch size it is called with beside its own files,
# and holds the thread it runs in for the seconds in `pause.txt`.
PREDICT = """
import time
from pathlib import Path

def load(version_dir):
    folder = Path(version_dir)
    pause = float((folder / "pause.txt").read_text())
    def predict(inputs):
        with (folder / "calls.txt").open("a") as out:
            out.write(f"{len(inputs['x'])}\\n")
        time.sleep(pause)
        return {"y": inputs["x"].sum(axis=1)}
    return predict
"""

SIGNATURE = Signature(
    inputs=(TensorSpec(name="x", datatype="FP32", shape=(-1, 3)),),
    outputs=(TensorSpec(name="y", datatype="FP32", shape=(-1,)),),
)


def backend(root: Path, pause_s: float, max_batch_size: int) -> InProcessBackend:
    """``summer/v1`` placed in the router, from a store at ``root``."""
    write_python_version(
        root,
        "summer",
        "v1",
        source=PREDICT,
        signature=SIGNATURE,
        **{"pause.txt": str(pause_s)},
    )
    spec = parse_spec(
        {
            "store": str(root),
            "models": [
                {
                    "name": "summer",
                    "versions": [
                        {
                            "name": "v1",
                            "placement": "router",
                            "batching": {
                                "max_batch_size": max_batch_size,
                                "batch_wait_timeout_s": 0.05,
                            },
                        }
                    ],
                }
            ],
        }
    )
    manifest = ModelStore(str(root)).manifest("summer", "v1")
    return InProcessBackend(load_runners(spec, {"summer": {"v1": manifest}}))


def model_calls(root: Path) -> list[int]:
    lines = (root / "summer" / "v1" / "calls.txt").read_text().split()
    # The first two are the warm-up, at the smallest and the largest batch.
    return [int(line) for line in lines[2:]]


def test_concurrent_requests_to_a_version_in_the_router_share_one_model_call(
    tmp_path: Path,
) -> None:
    local = backend(tmp_path, pause_s=0.0, max_batch_size=8)
    requests = [np.full((2, 3), i, dtype=np.float32) for i in range(8)]

    async def send_all() -> list[np.ndarray]:
        results = await asyncio.gather(
            *(local.infer("summer", "v1", {"x": x}) for x in requests)
        )
        return [result.outputs["y"] for result in results]

    answers = asyncio.run(send_all())

    # Each caller gets its own rows back, in its own order.
    assert [answer.tolist() for answer in answers] == [[3 * i, 3 * i] for i in range(8)]
    assert model_calls(tmp_path) == [16]
    (report,) = local.reports("router-1", "node-a")
    assert (report.requests, report.errors, report.batches) == (8, 0, {8: 1})


def test_a_slow_model_in_the_router_leaves_its_event_loop_free(tmp_path: Path) -> None:
    # The router's loop reads the next requests, answers health checks and
    # runs the other versions while a slow model computes.
    local = backend(tmp_path, pause_s=0.3, max_batch_size=2)

    async def ticks_during_one_request() -> int:
        ticks = 0

        async def tick() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        ticker = asyncio.create_task(tick())
        await local.infer("summer", "v1", {"x": np.ones((1, 3), dtype=np.float32)})
        ticker.cancel()
        return ticks

    # 30 ticks if the loop were free all along; none if the model held it.
    assert asyncio.run(ticks_during_one_request()) >= 10
    assert model_calls(tmp_path) == [1]
