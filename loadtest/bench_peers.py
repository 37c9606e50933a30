"""rayfleet against its peers on a model that costs milliseconds: the image CNN.

One run, one machine, one ONNX model (``image/v1``, [-1, 3, 224, 224] FP32), one
image per request as binary v2 tensors, one load generator (loadtest/loadgen.py at
nice 19, closed loop), concurrency 1, 8, 32 and 64:

- raw onnxruntime in this process, at the batch size where it is fastest (the
  compute limit; the same one intra-op thread as every server's session);
- KServe 0.21 ``ModelServer`` (loadtest/peers/kserve_server.py, in the virtualenv
  bench_overhead.py builds);
- a bare one-deployment Serve app, model in the ingress replica (loadtest/targets.py
  serve-bare: rayfleet's in-process app, so batched like a version in the router);
- rayfleet, router plus an image replica one hop away, with dynamic batching
  (``max_batch_size`` 16) and without (1), and with batching over the direct
  channel (``transport: direct``); and with the model placed in the router (no
  hop; batched, the model in a worker thread), in one router replica and in two.

    .venv/bin/python -m loadtest.bench_peers [--duration 4] [-c 1 8 32 64]

Prints a markdown table of images/s and p50/p99 with ratios to KServe, and writes it
to loadtest/out/peers.md. Loopback only; every server is stopped at the end.
"""

from __future__ import annotations

import argparse

from loadtest.common import (
    IMAGE_MODEL,
    OUT,
    ROOT,
    ensure_image_model,
    ensure_kserve,
    versus_table,
    write_report,
)
from loadtest.loadgen import LoadResult, raw_onnxruntime, v2_request
from loadtest.servers import Server, load_each, rayfleet_env, target_command

__all__ = ["main", "servers"]


def servers() -> list[Server]:
    """Every server in the comparison, in table order."""
    # Each Ray server gets its own HAProxy ports: the last one's may linger.
    return [
        Server(
            "kserve",
            [
                str(ensure_kserve()),
                str(ROOT / "loadtest/peers/kserve_server.py"),
                str(IMAGE_MODEL),
                "image",
                "{port}",
            ],
        ),
        Server("serve-bare", target_command("serve-bare"), rayfleet_env()),
        Server("rayfleet, batching 16", target_command("rayfleet"), rayfleet_env()),
        Server(
            "rayfleet, no batching",
            target_command("rayfleet", "--max-batch-size", "1"),
            rayfleet_env(),
        ),
        Server(
            "rayfleet, direct, batching 16",
            target_command("rayfleet", "--transport", "direct"),
            rayfleet_env(),
        ),
        Server(
            "rayfleet, in the router",
            target_command("rayfleet", "--placement", "router"),
            rayfleet_env(),
        ),
        Server(
            "rayfleet, in 2 router replicas",
            target_command("rayfleet", "--placement", "router", "--routers", "2"),
            rayfleet_env(),
        ),
    ]


def main() -> None:
    """Measure raw onnxruntime, then every server at every concurrency."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=float, default=4.0)
    parser.add_argument(
        "-c", "--concurrency", type=int, nargs="+", default=[1, 8, 32, 64]
    )
    parser.add_argument("--only", nargs="*", help="substrings of server names to run")
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    ensure_image_model()
    from rayfleet.cli.demo import image_batch

    body, headers = v2_request(image_batch(1), binary=True)
    best: tuple[float, LoadResult, int] | None = None
    for batch in (1, 8, 32):
        raw = raw_onnxruntime(
            IMAGE_MODEL, {"image": image_batch(batch)}, args.duration, warmup_runs=5
        )
        images = raw.rps * batch
        print(
            f"raw onnxruntime batch {batch:2}: {images:6.0f} images/s, "
            f"p50 {raw.p50_ms:.2f} ms",
            flush=True,
        )
        if best is None or images > best[0]:
            best = (images, raw, batch)
    assert best is not None
    images, raw, batch = best
    # The in-process limit has no concurrency: the same numbers in every column.
    rows: dict[tuple[str, ...], dict[int, tuple[float, LoadResult]]] = {
        (f"raw onnxruntime (batch {batch}, in-process)",): dict.fromkeys(
            args.concurrency, (images, raw)
        )
    }
    measured = load_each(
        servers(), args.only, args.concurrency, body, headers, args.duration
    )
    for server, result in measured:
        rows.setdefault((server.name,), {})[result.concurrency] = (result.rps, result)
        print(
            f"{server.name:24} c={result.concurrency:<3} {result.rps:7.0f} images/s "
            f"p50 {result.p50_ms:7.2f} ms  p99 {result.p99_ms:7.2f} ms  "
            f"errors {result.errors}",
            flush=True,
        )
    kserve = {c: rate for c, (rate, _) in rows.get(("kserve",), {}).items()}
    table = versus_table(
        ["server"], "images/s", rows, args.concurrency, kserve, ratio_unit="x"
    )
    write_report("peers.md", table)


if __name__ == "__main__":
    main()
