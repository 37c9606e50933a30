"""The two tables of the payload benchmark, in markdown."""

from __future__ import annotations

from loadtest.bench_payloads.memory import MemoryRow
from loadtest.bench_payloads.run import LoadRow
from loadtest.common import markdown_table

__all__ = ["load_table", "memory_table"]


def memory_table(rows: list[MemoryRow], tensor_bytes: int, summary: int) -> str:
    """Measurement 1: peak memory per format, against the tensor's size."""
    header = [
        "format",
        "request bytes",
        "response bytes",
        "peak MB beyond the body",
        "peak / tensor",
    ]
    cells = [
        [
            row.format,
            f"{row.request_bytes:,}",
            f"{row.response_bytes:,}",
            f"{row.peak_bytes / 1e6:.2f}",
            f"{row.peak_bytes / tensor_bytes:.2f}x",
        ]
        for row in rows
    ]
    return (
        f"Peak memory per request, 8 x 3 x 224 x 224 FP32 "
        f"({tensor_bytes / 1e6:.1f} MB tensor), router code in-process:\n\n"
        + markdown_table(header, cells)
        + f"\n\nOf each peak, {summary / 1e6:.2f} MB is the observation's summary "
        "of the first image (float64 statistics); the rest is the format's own "
        "cost.\n"
    )


def load_table(rows: list[LoadRow]) -> str:
    """Measurement 2: each format's row, with its throughput over JSON's."""
    json_rps = {
        (r.batch, r.result.concurrency): r.result.rps
        for r in rows
        if r.format == "json"
    }
    header = [
        "images/request",
        "format",
        "c",
        "requests/s",
        "images/s",
        "p50 / p99 ms",
        "vs JSON",
        "request bytes",
        "response bytes",
        "router CPU ms/req",
        "server CPU ms/req",
        "errors",
    ]
    cells = []
    for r in rows:
        base = json_rps.get((r.batch, r.result.concurrency))
        cells.append(
            [
                str(r.batch),
                r.format,
                str(r.result.concurrency),
                f"{r.result.rps:.1f}",
                f"{r.result.rps * r.batch:.0f}",
                f"{r.result.p50_ms:.1f} / {r.result.p99_ms:.1f}",
                f"{r.result.rps / base:.2f}x" if base else "",
                f"{r.request_bytes:,}",
                f"{r.response_bytes:,}",
                f"{r.router_cpu_ms:.2f}",
                f"{r.server_cpu_ms:.2f}",
                str(sum(r.result.errors.values())),
            ]
        )
    return markdown_table(header, cells) + "\n"
