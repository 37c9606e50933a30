"""Batch scoring throughput: ``rayfleet batch`` against plain onnxruntime loops.

One run, one machine, one Parquet input (the digits demo images replicated, 64
``pixel_*`` columns and an ``id``), one model (digits v1 by default). Each way
reads the same files and writes Parquet predictions (``id``, ``label``,
``probabilities``), and each is timed from start to written output:

- a plain loop: ``pq.read_table``, then ``session.run`` row by row, as a naive
  script does;
- one big batch: ``pq.read_table``, one ``session.run`` on every row at once
  (needs the whole input in memory; the single-process ceiling);
- ``rayfleet batch``: the Python API the command calls, on a local Ray of
  ``--cpus`` CPUs started beforehand (its start is shown apart).

    .venv/bin/python -m loadtest.bench_batch [--rows 200000 1000000] [--cpus 2]

Prints a markdown table with each way's rows/s and its ratio to the plain loop,
and the ``rayfleet batch`` command that does the same from a shell.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pyarrow as pa
import pyarrow.parquet as pq

from rayfleet.cli.demo import build_demo_store, digits_split

FILES = 4
FEATURES = [f"pixel_{i}" for i in range(64)]


def _input(folder: Path, rows: int) -> None:
    """``rows`` digits images in ``FILES`` Parquet files under ``folder``."""
    x_train, x_test, _, _ = digits_split()
    images = np.concatenate([x_train, x_test])
    picked = images[np.arange(rows) % len(images)]
    folder.mkdir(parents=True)
    for index, part in enumerate(np.array_split(np.arange(rows), FILES)):
        columns = {"id": pa.array(part)}
        columns.update({name: picked[part, i] for i, name in enumerate(FEATURES)})
        pq.write_table(pa.table(columns), folder / f"part-{index}.parquet")


def _features(folder: Path) -> tuple[pa.Table, np.ndarray]:
    table = pq.read_table(folder)
    return table, np.stack([table.column(n).to_numpy() for n in FEATURES], axis=1)


def _write(table: pa.Table, labels: np.ndarray, scores: np.ndarray, out: Path) -> None:
    probabilities = pa.FixedSizeListArray.from_arrays(
        pa.array(scores.reshape(-1)), scores.shape[1]
    )
    result = pa.table(
        {"id": table.column("id"), "label": labels, "probabilities": probabilities}
    )
    pq.write_table(result, out)


def plain_loop(model: Path, folder: Path, out: Path) -> None:
    """Row by row, as a script written without batching in mind does it."""
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    table, x = _features(folder)
    labels, scores = [], []
    for row in range(len(x)):
        label, probabilities = session.run(None, {"input": x[row : row + 1]})
        labels.append(label[0])
        scores.append(probabilities[0])
    _write(table, np.array(labels), np.array(scores), out)


def one_batch(model: Path, folder: Path, out: Path) -> None:
    """Every row in one call: what one process can do with the input in memory."""
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    table, x = _features(folder)
    labels, scores = session.run(None, {"input": x})
    _write(table, labels, scores, out)


def _timed(action: Callable[..., object], *args: object) -> float:
    began = time.perf_counter()
    action(*args)
    return time.perf_counter() - began


def main() -> None:
    """Build the input, run each way on it, print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--rows", type=int, nargs="+", default=[200_000, 1_000_000, 2_000_000]
    )
    parser.add_argument("--cpus", type=int, default=2, help="CPUs of the local Ray")
    parser.add_argument("--version", default="v1", help="digits version to score")
    parser.add_argument("--batch-size", type=int, default=4096)
    parser.add_argument("--num-cpus", type=float, default=1.0, help="per actor")
    args = parser.parse_args()

    import ray

    from rayfleet.deployments.scoring_job import score
    from rayfleet.platform.config.spec import VersionSpec

    work = Path(tempfile.mkdtemp(prefix="rayfleet-bench-batch-"))
    try:
        store = work / "store"
        build_demo_store(str(store))
        model = store / "digits" / args.version / "model.onnx"
        began = time.perf_counter()
        ray.init(num_cpus=args.cpus, include_dashboard=False, log_to_driver=False)
        ray_start = time.perf_counter() - began
        spec = VersionSpec(name=args.version, num_cpus=args.num_cpus)
        lines = [
            f"digits {args.version}, {args.cpus} CPUs, batch size {args.batch_size}, "
            f"{args.num_cpus:g} CPU per actor; Ray started in {ray_start:.1f} s "
            "(not counted). Jobs run in the order shown: the first rayfleet job "
            "also starts Ray's worker processes.",
            "",
            "| rows | way | seconds | rows/s | vs plain loop |",
            "|---:|---|---:|---:|---:|",
        ]
        command = ""
        for rows in args.rows:
            data = work / f"in-{rows}"
            _input(data, rows)
            seconds = {
                "plain loop (row by row)": _timed(
                    plain_loop, model, data, work / "loop.parquet"
                ),
                "one big batch": _timed(one_batch, model, data, work / "batch.parquet"),
            }
            output = work / f"out-{rows}"
            summary = score(
                str(store),
                "digits",
                args.version,
                str(data),
                str(output),
                batch_size=args.batch_size,
                passthrough=["id"],
                input_columns=["pixel_*"],
                spec=spec,
            )
            assert summary.passed and summary.scored == rows, summary.describe()
            seconds["rayfleet batch"] = summary.seconds
            loop = seconds["plain loop (row by row)"]
            for way, taken in seconds.items():
                lines.append(
                    f"| {rows:,} | {way} | {taken:.2f} | {rows / taken:,.0f} "
                    f"| {loop / taken:.2f}x |"
                )
            command = (
                f"rayfleet batch --store {store} --model digits --version "
                f"{args.version} {data} {output} --input-columns 'pixel_*' "
                f"--passthrough id --batch-size {args.batch_size} "
                f"--num-cpus {args.num_cpus:g}"
            )
        ray.shutdown()
        print("\n".join(lines))
        print(f"\nThe same from a shell (last size):\n  {command}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
