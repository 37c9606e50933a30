"""What tracing costs one request in the router's process: CPU per request of
rayfleet's HTTP app, driven through ASGI with no server and no Ray, over digits v1
run in-process (4 rows of v2 JSON a request).

Variants: tracing off; on, sampling 0%, 10% and 100% with an exporter that drops
the spans; and 100% with one that encodes them as OTLP protobuf, as the real
exporter does before it sends. CPU time counts every thread of the process, the
span processor's included. Rounds take the variants in turn.

    .venv/bin/python -m loadtest.profile_tracing [--requests 3000] [--rounds 3]
        [--profile "100% encode"]

``--profile`` prints cProfile's top functions for one variant.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import pstats
import time
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from typing import Any

import numpy as np
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from loadtest.bench_overhead import ROWS, digits_payloads
from loadtest.common import STORE, ensure_digits_store
from rayfleet.platform.config.spec import parse_spec
from rayfleet.platform.config.store import ModelStore
from rayfleet.platform.config.tracing import TracingSpec
from rayfleet.platform.ingress.http import build_http_app
from rayfleet.platform.serving.inprocess import InProcessBackend, load_runtimes
from rayfleet.platform.serving.service import InferenceService
from rayfleet.platform.tracing import Tracing

__all__ = ["main"]

App = Callable[[MutableMapping[str, Any], Any, Any], Awaitable[None]]
PATH = "/v2/models/digits/infer"


class _Drop(SpanExporter):
    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.SUCCESS


class _Encode(SpanExporter):
    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        encode_spans(spans).SerializeToString()
        return SpanExportResult.SUCCESS


VARIANTS: dict[str, tuple[float, type[SpanExporter]] | None] = {
    "off": None,
    "0%": (0.0, _Drop),
    "10%": (0.1, _Drop),
    "100% drop": (1.0, _Drop),
    "100% encode": (1.0, _Encode),
}


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
    runtimes = load_runtimes(spec, manifests, placement=None)
    apps: dict[str, App] = {}
    for name, variant in VARIANTS.items():
        tracing = None
        if variant is not None:
            rate, exporter = variant
            tracing = Tracing(
                TracingSpec(
                    enabled=True,
                    otlp_endpoint="http://127.0.0.1:4318/v1/traces",
                    sample_rate=rate,
                ),
                exporter(),
            )
        service = InferenceService(
            spec,
            manifests,
            InProcessBackend(runtimes, tracing=tracing),
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


def main() -> None:
    """Print each variant's CPU per request, round after round."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--profile", choices=list(VARIANTS))
    args = parser.parse_args()
    from rayfleet.cli.demo import digits_split

    rows = np.ascontiguousarray(digits_split()[1][:ROWS])
    body, _headers = digits_payloads(rows)["json"]
    apps = _apps()
    for _ in range(args.rounds):
        cells = [
            f"{name} {asyncio.run(_cpu_us_per_request(app, body, n)):.0f} us"
            for name, app in apps.items()
            for n in [args.requests]
        ]
        print(" | ".join(cells), flush=True)
    if args.profile is not None:
        profile = cProfile.Profile()
        profile.enable()
        asyncio.run(_cpu_us_per_request(apps[args.profile], body, args.requests))
        profile.disable()
        pstats.Stats(profile).sort_stats("tottime").print_stats(25)


if __name__ == "__main__":
    main()
