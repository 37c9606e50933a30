"""What the Validator's statistics cost: ingest, window queries, drift tests.

Pure CPU, one process, no Ray:

- recording observations into a ``WindowedStats`` (64-feature summaries);
- merging a 5-minute and a 1-hour window, and a 1-hour dashboard series;
- ``feature_drift`` on 64 features for the sample sizes a rollout sees;
- ``ks_2samp`` against scipy's (a development dependency) at a few sizes;
- pickling a batch of observation rows;
- one router's observations reaching the Validator, as one row per request
  against the summaries routers send (:mod:`rayfleet.platform.serving.aggregate`):
  CPU per request on the router's side (record, pickle) and on the Validator's
  (unpickle, account), for the same traffic at 2,000 requests/s, flushed every
  half second.

    .venv/bin/python -m loadtest.bench_validation_stats [--observations 100000]

Prints a markdown table and writes it to loadtest/out/validation_stats.md.
"""

from __future__ import annotations

import argparse
import pickle
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np
from scipy import stats

from rayfleet.platform.config.spec import ObservationSpec
from rayfleet.platform.serving.aggregate import ObservationAggregator, windowed_stats
from rayfleet.platform.serving.buffer import ObservationBuffer
from rayfleet.platform.validation import (
    Observation,
    Totals,
    WindowedStats,
    feature_drift,
    ks_2samp,
)

OUT = Path(__file__).resolve().parent / "out" / "validation_stats.md"
FEATURES = 64


def _best_ms(action: Callable[[], object], repeats: int = 5) -> float:
    best = float("inf")
    for _ in range(repeats):
        began = time.perf_counter()
        action()
        best = min(best, (time.perf_counter() - began) * 1000)
    return best


def _observations(count: int, rng: np.random.Generator) -> list[Observation]:
    start = 1_700_000_000.0
    spacing = 3600.0 / count  # the whole count within one hour
    latencies = rng.lognormal(2, 0.6, count)
    pixels = rng.integers(0, 17, (count, FEATURES)).astype(float)
    return [
        Observation(
            "digits",
            "v2",
            start + i * spacing,
            float(latencies[i]),
            float(latencies[i]) / 3,
            503 if i % 500 == 0 else 200,
            tuple(pixels[i].tolist()),
            float(i % 10),
            0.9,
            request_id=f"r{i}",
        )
        for i in range(count)
    ]


def _router_traffic(
    count: int, rate: float, rng: np.random.Generator
) -> list[Observation]:
    """``count`` requests at ``rate``/s, as the router observes them: features
    for a quarter (the default ``sample_rate``), a class and its confidence."""
    start = 1_700_000_000.0
    latencies = rng.lognormal(1, 0.5, count)
    pixels = rng.integers(0, 17, (count, FEATURES)).astype(float)
    sampled = rng.random(count) < 0.25
    return [
        Observation(
            "digits",
            "v1",
            start + i / rate,
            float(latencies[i]),
            float(latencies[i]) / 3,
            200,
            tuple(pixels[i].tolist()) if sampled[i] else None,
            float(i % 10),
            0.9,
        )
        for i in range(count)
    ]


def _per_request_us(
    record: Callable[[Observation], None],
    flush: Callable[[], bytes],
    ingest: Callable[[bytes], None],
    flushes: list[list[Observation]],
) -> tuple[float, float]:
    """Router and Validator CPU per request, in us, over ``flushes``."""
    router = validator = 0.0
    for batch in flushes:
        began = time.process_time()
        for observation in batch:
            record(observation)
        sent = flush()
        router += time.process_time() - began
        began = time.process_time()
        ingest(sent)
        validator += time.process_time() - began
    requests = sum(len(batch) for batch in flushes)
    return router / requests * 1e6, validator / requests * 1e6


def _delivery(rng: np.random.Generator) -> list[tuple[str, str]]:
    """Rows against summaries: the same 20,000 requests, 1,000 per flush."""
    spec = ObservationSpec()
    traffic = _router_traffic(20_000, 2000.0, rng)
    flushes = [traffic[i : i + 1000] for i in range(0, len(traffic), 1000)]

    buffer = ObservationBuffer(spec.buffer_size)
    row_windows, row_totals = windowed_stats(spec), Totals()

    def ingest_rows(sent: bytes) -> None:
        # What the Validator did with each row before routers summed them up.
        for row in pickle.loads(sent):
            observation = Observation.from_row(row)
            row_windows.add(observation)
            row_totals.add(observation)

    aggregator = ObservationAggregator(spec)
    summed_windows, summed_totals = windowed_stats(spec), Totals()

    def ingest_summary(sent: bytes) -> None:
        for part in pickle.loads(sent).versions.values():
            summed_windows.merge(part.stats)
            summed_totals.merge(part.totals)

    results = []
    for label, measure in (
        (
            "rows",
            lambda: _per_request_us(
                buffer.record,
                lambda: pickle.dumps(buffer.drain(spec.buffer_size)),
                ingest_rows,
                flushes,
            ),
        ),
        (
            "summaries",
            lambda: _per_request_us(
                aggregator.record,
                lambda: pickle.dumps(aggregator.take()),
                ingest_summary,
                flushes,
            ),
        ),
    ):
        router_us, validator_us = measure()
        results.append(
            (
                f"delivery as {label}, per request: router / Validator CPU",
                f"{router_us:.1f} us / {validator_us:.1f} us",
            )
        )
    return results


def main() -> None:
    """Run every measurement and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--observations", type=int, default=100_000)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    observations = _observations(args.observations, rng)
    rows: list[tuple[str, str]] = []

    windowed = WindowedStats()
    began = time.perf_counter()
    windowed.add_many(observations)
    elapsed = time.perf_counter() - began
    rows.append(
        (
            f"ingest {args.observations:,} observations",
            f"{elapsed:.2f} s ({elapsed / args.observations * 1e6:.1f} us each)",
        )
    )
    now = observations[-1].ts
    for label, seconds in (("5 min", 300.0), ("1 h", 3600.0)):
        ms = _best_ms(partial(windowed.window, seconds, now))
        rows.append((f"merge a {label} window", f"{ms:.1f} ms"))
    rows.append(
        (
            "1 h dashboard series",
            f"{_best_ms(lambda: windowed.series(3600, now)):.1f} ms",
        )
    )

    canary = windowed.window(300, now).feature_columns()
    for label, size in (
        ("500 vs 500", 500),
        ("500 vs 540", 540),
        ("500 vs 20,000", 20_000),
    ):
        reference = {
            f"f{i}": rng.integers(0, 17, size).astype(float) for i in range(FEATURES)
        }
        ms = _best_ms(partial(feature_drift, reference, canary), repeats=3)
        rows.append((f"feature_drift, 64 features, {label}", f"{ms:.0f} ms"))

    for n1, n2 in ((500, 500), (500, 540), (5_000, 7_000), (20_000, 500)):
        a, b = rng.normal(size=n1), rng.normal(0.05, size=n2)
        ours = _best_ms(partial(ks_2samp, a, b))
        theirs = _best_ms(partial(stats.ks_2samp, a, b))
        rows.append(
            (f"ks_2samp {n1:,} vs {n2:,} (scipy)", f"{ours:.2f} ms ({theirs:.2f} ms)")
        )

    batch = [obs.to_row() for obs in observations[:1000]]
    ms = _best_ms(lambda: pickle.loads(pickle.dumps(batch)))
    rows.append(
        (
            "pickle round trip, 1000 rows",
            f"{ms:.1f} ms, {len(pickle.dumps(batch)) / 1000:.0f} bytes a row",
        )
    )

    rows.extend(_delivery(rng))

    table = "\n".join(
        ["| measurement | result |", "|---|---|"]
        + [f"| {name} | {value} |" for name, value in rows]
    )
    print(table)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(table + "\n")


if __name__ == "__main__":
    main()
