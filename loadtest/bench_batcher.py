"""Serve's ``@serve.batch`` against rayfleet's DynamicBatcher, side by side.

Three batchers: Serve's, rayfleet's, and rayfleet's with ``wait_alone`` (a lone
request waits ``max_wait_s`` for company, as every request did before the idle
rule): the last pair shows what the idle rule saves at low concurrency and that
it costs nothing when busy.

One process, one event loop, no Ray cluster: ``concurrency`` closed-loop callers
submit one request each for ``--duration`` seconds, to each batcher in turn, with
the same ``max_batch_size`` and wait (2 ms). Each caller pauses a random 0 to
``--jitter-ms`` before each request, so arrivals spread out as they do from real
clients (back to back, callers answered by one batch would all come back at
once, and any batcher would see full batches). Two models:

- ``held``: every call takes ``--hold-ms`` whatever the batch size, as a GPU does
  for small batches (an ``asyncio.sleep``, so the CPU is not the limit);
- ``image``: the image CNN on onnxruntime in a worker thread, the way a replica
  runs it (needs the bench store: built on first use).

    .venv/bin/python -m loadtest.bench_batcher [--duration 5] [-c 8 32 64]
        [--hold-ms 20] [--max-batch-size 16] [--jitter-ms 10]

Prints a markdown table (requests/s, mean batch, p50/p99) with rayfleet / Serve
ratios, and writes it to loadtest/out/batcher.md.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import numpy as np
from ray import serve
from ray.serve.batching import _BatchQueue

from loadtest.common import (
    IMAGE_MODEL,
    OUT,
    ensure_image_model,
    markdown_row,
    markdown_table,
    write_report,
)
from loadtest.loadgen import LoadResult
from rayfleet.platform.serving.batcher import DynamicBatcher

WAIT_S = 0.002

# Serve's batch queue looks up its replica's max_ongoing_requests to print a
# warning, which fails outside a replica; the batching itself does not need it.
_BatchQueue._warn_if_max_batch_size_exceeds_max_ongoing_requests = (  # type: ignore[method-assign]
    lambda self: None
)
Model = Callable[[list[Any]], Awaitable[Sequence[Any]]]


def held_model(hold_s: float, sizes: list[int]) -> Model:
    """A call that takes ``hold_s`` whatever its size."""

    async def run(items: list[Any]) -> Sequence[Any]:
        sizes.append(len(items))
        await asyncio.sleep(hold_s)
        return items

    return run


def image_model(sizes: list[int]) -> Model:
    """The image CNN on one onnxruntime thread, called off the event loop."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(IMAGE_MODEL), sess_options=options)

    async def run(items: list[Any]) -> Sequence[Any]:
        sizes.append(len(items))
        batch = np.concatenate(items)
        (probabilities, _) = await asyncio.to_thread(
            session.run, None, {"image": batch}
        )
        return list(probabilities)

    return run


async def closed_loop(
    submit: Callable[[Any], Awaitable[Any]],
    item: Any,
    concurrency: int,
    duration_s: float,
    jitter_s: float,
) -> LoadResult:
    """``concurrency`` callers submitting for ``duration_s``, each pausing a
    uniform 0 to ``jitter_s`` before every request."""
    latencies: list[float] = []
    stop_at = time.perf_counter() + duration_s
    rng = np.random.default_rng(0)

    async def caller() -> None:
        while time.perf_counter() < stop_at:
            await asyncio.sleep(rng.uniform(0, jitter_s))
            started = time.perf_counter()
            await submit(item)
            latencies.append(time.perf_counter() - started)

    began = time.perf_counter()
    await asyncio.gather(*(caller() for _ in range(concurrency)))
    return LoadResult.from_latencies(
        concurrency, latencies, time.perf_counter() - began
    )


async def measure(
    kind: str,
    model: Model,
    item: Any,
    max_batch_size: int,
    concurrency: int,
    duration_s: float,
    jitter_s: float,
) -> LoadResult:
    """One batcher wrapped around ``model``, under one load."""
    if kind in ("rayfleet", "waiting"):
        batcher = DynamicBatcher(
            model, max_batch_size, WAIT_S, wait_alone=kind == "waiting"
        )
        return await closed_loop(
            batcher.submit, item, concurrency, duration_s, jitter_s
        )

    @serve.batch(max_batch_size=max_batch_size, batch_wait_timeout_s=WAIT_S)
    async def batched(items: list[Any]) -> Sequence[Any]:
        return await model(items)

    return await closed_loop(batched, item, concurrency, duration_s, jitter_s)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument(
        "-c", "--concurrency", type=int, nargs="+", default=[1, 8, 32, 64]
    )
    parser.add_argument("--hold-ms", type=float, default=20.0)
    parser.add_argument("--max-batch-size", type=int, default=16)
    parser.add_argument(
        "--jitter-ms",
        type=float,
        default=10.0,
        help="each caller pauses up to this long before a request: arrivals spread "
        "over time as they do from clients and routers, not in lockstep",
    )
    parser.add_argument("--models", nargs="+", default=["held", "image"])
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    lines = []
    for model_name in args.models:
        if model_name == "image":
            ensure_image_model()
            from rayfleet.cli.demo import image_batch

            item: Any = image_batch(1)
        else:
            item = 1
        for concurrency in args.concurrency:
            results: dict[str, tuple[LoadResult, float]] = {}
            for kind in ("serve", "waiting", "rayfleet"):
                sizes: list[int] = []
                model = (
                    image_model(sizes)
                    if model_name == "image"
                    else held_model(args.hold_ms / 1000, sizes)
                )
                result = asyncio.run(
                    measure(
                        kind,
                        model,
                        item,
                        args.max_batch_size,
                        concurrency,
                        args.duration,
                        args.jitter_ms / 1000,
                    )
                )
                results[kind] = (result, float(np.mean(sizes)))
            (serve_result, serve_batch) = results["serve"]
            (waiting, waiting_batch) = results["waiting"]
            (ours, our_batch) = results["rayfleet"]
            cells = [
                model_name,
                str(concurrency),
                f"{serve_result.rps:.0f}",
                f"{waiting.rps:.0f}",
                f"{ours.rps:.0f}",
                f"{ours.rps / serve_result.rps:.2f}x",
                f"{ours.rps / waiting.rps:.2f}x",
                f"{serve_batch:.1f} / {waiting_batch:.1f} / {our_batch:.1f}",
                f"{serve_result.p50_ms:.1f} / {serve_result.p99_ms:.1f}",
                f"{waiting.p50_ms:.1f} / {waiting.p99_ms:.1f}",
                f"{ours.p50_ms:.1f} / {ours.p99_ms:.1f}",
            ]
            print(markdown_row(cells), flush=True)
            lines.append(cells)
    header = [
        "model",
        "c",
        "Serve req/s",
        "waiting alone req/s",
        "rayfleet req/s",
        "rayfleet / Serve",
        "rayfleet / waiting alone",
        "mean batch (Serve / waiting / rayfleet)",
        "Serve p50 / p99 ms",
        "waiting alone p50 / p99 ms",
        "rayfleet p50 / p99 ms",
    ]
    table = markdown_table(header, lines, right=range(1, 8))
    write_report("batcher.md", table + "\n")


if __name__ == "__main__":
    main()
