"""What tracing costs one request in the router's process: CPU per request of
rayfleet's HTTP app, driven through ASGI with no server and no Ray, over digits v1
run in-process (4 rows of v2 JSON a request).

Variants: tracing off; on, sampling 0%, 10% and 100%, with spans encoded as
OTLP protobuf as for a collector and then dropped instead of sent. CPU time
counts every thread of the process, the export thread's included. Rounds take
the variants in turn, rotating who goes first; the last line is each variant's
median.

    .venv/bin/python -m loadtest.profile_tracing [--requests 3000] [--rounds 3]
        [--profile "100%"]

``--profile`` prints cProfile's top functions for one variant; ``--tracer-alone``
times the tracer by itself, without the app around it.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import pstats
import statistics
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import numpy as np

from loadtest.bench_overhead import ROWS, digits_payloads
from loadtest.common import STORE, ensure_digits_store
from rayfleet.platform.config.spec import parse_spec
from rayfleet.platform.config.store import ModelStore
from rayfleet.platform.config.tracing import TracingSpec
from rayfleet.platform.ingress.http import build_http_app
from rayfleet.platform.serving.inprocess import InProcessBackend, load_runners
from rayfleet.platform.serving.service import InferenceService
from rayfleet.platform.tracing import Tracing
from rayfleet.platform.tracing.tracer import EXPORT_BATCH

__all__ = ["main"]

App = Callable[[MutableMapping[str, Any], Any, Any], Awaitable[None]]
PATH = "/v2/models/digits/infer"

# Sampling rate per variant; None is tracing off.
VARIANTS: dict[str, float | None] = {
    "off": None,
    "0%": 0.0,
    "10%": 0.1,
    "100%": 1.0,
}


def _drop(body: bytes) -> bool:
    return True


def _apps() -> dict[str, App]:
    ensure_digits_store()
    spec = parse_spec(
        {
            "store": str(STORE),
            "observations": {"enabled": False},
            "models": [
                {"name": "digits", "versions": [{"name": "v1", "placement": "router"}]}
            ],
        }
    )
    manifests = {"digits": {"v1": ModelStore(spec.store).manifest("digits", "v1")}}
    apps: dict[str, App] = {}
    for name, variant in VARIANTS.items():
        tracing = None
        if variant is not None:
            tracing = Tracing(
                TracingSpec(
                    enabled=True,
                    otlp_endpoint="http://127.0.0.1:4318/v1/traces",
                    sample_rate=variant,
                ),
                _drop,
            )
        service = InferenceService(
            spec,
            manifests,
            InProcessBackend(
                load_runners(spec, manifests, placement=None, tracing=tracing)
            ),
            tracing=tracing,
        )
        apps[name] = build_http_app(service)
    return apps


async def _request(app: App, body: bytes) -> None:
    scope: dict[str, Any] = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": PATH,
        "raw_path": PATH.encode(),
        "query_string": b"",
        "root_path": "",
        "server": ("127.0.0.1", 8000),
        "client": ("127.0.0.1", 1),
        "headers": [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
        ],
    }
    messages = [{"type": "http.request", "body": body, "more_body": False}]
    statuses: list[int] = []

    async def receive() -> dict[str, Any]:
        if messages:
            return messages.pop()
        await asyncio.sleep(3600)  # the app never reads past the body
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    await app(scope, receive, send)
    if statuses != [200]:
        raise RuntimeError(f"the app answered {statuses}")


async def _cpu_us_per_request(app: App, body: bytes, requests: int) -> float:
    for _ in range(200):  # warm: first calls build caches
        await _request(app, body)
    started = time.process_time()
    for _ in range(requests):
        await _request(app, body)
    return (time.process_time() - started) / requests * 1e6


def _tracer_alone(requests: int) -> tuple[float, float]:
    """Microseconds per request of the tracer by itself, as the router calls it
    for a version placed there: making the two spans (each written as OTLP
    bytes as it ends), then the batch's flush to a sink that drops it (the
    spans are held below one export batch, so the flush is timed apart)."""
    tracing = Tracing(
        TracingSpec(
            enabled=True,
            otlp_endpoint="http://127.0.0.1:4318/v1/traces",
            export_every_s=3600,
        ),
        _drop,
    )
    carrier = {"content-type": "application/json", "x-request-id": "r"}
    spans_s = flush_s = 0.0
    try:
        for _ in range(0, requests, EXPORT_BATCH // 2):
            started = time.perf_counter()
            for _ in range(EXPORT_BATCH // 2 - 1):
                with tracing.request_span(
                    carrier, {"http.request.method": "POST", "url.path": PATH}
                ) as span:
                    tracing.annotate_choice("digits", "v1", "weight", "r" * 32, ROWS)
                    with tracing.replica_span("digits", "v1", "router") as run:
                        run.record_run(0.1, 1, 0.2)
                    span.set_status(200)
            ended = time.perf_counter()
            tracing.flush()
            spans_s += ended - started
            flush_s += time.perf_counter() - ended
    finally:
        tracing.close()
    made = requests // (EXPORT_BATCH // 2) * (EXPORT_BATCH // 2 - 1)
    return spans_s / made * 1e6, flush_s / made * 1e6


def main() -> None:
    """Print each variant's CPU per request, round after round."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--profile", choices=list(VARIANTS))
    parser.add_argument(
        "--tracer-alone",
        action="store_true",
        help="time the tracer by itself instead: spans, then their sending",
    )
    args = parser.parse_args()
    if args.tracer_alone:
        for _ in range(args.rounds):
            spans_us, flush_us = _tracer_alone(args.requests)
            print(f"spans {spans_us:.1f} us/request | flush {flush_us:.1f} us/request")
        return
    from rayfleet.cli.demo import digits_split

    rows = np.ascontiguousarray(digits_split()[1][:ROWS])
    body, _headers = digits_payloads(rows)["json"]
    apps = _apps()
    names = list(apps)
    cpu: dict[str, list[float]] = {name: [] for name in names}
    for index in range(args.rounds):
        # Rotating who goes first, as bench_operability does: the first of a
        # round runs on a cooler cache.
        order = names[index % len(names) :] + names[: index % len(names)]
        for name in order:
            cpu[name].append(
                asyncio.run(_cpu_us_per_request(apps[name], body, args.requests))
            )
        print(
            " | ".join(f"{name} {cpu[name][-1]:.0f} us" for name in names), flush=True
        )
    print(
        "median: "
        + " | ".join(f"{name} {statistics.median(cpu[name]):.0f} us" for name in names)
    )
    if args.profile is not None:
        profile = cProfile.Profile()
        profile.enable()
        asyncio.run(_cpu_us_per_request(apps[args.profile], body, args.requests))
        profile.disable()
        pstats.Stats(profile).sort_stats("tottime").print_stats(25)


if __name__ == "__main__":
    main()
