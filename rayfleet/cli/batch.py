"""``rayfleet batch``: score Parquet files with a version on Ray Data."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from rayfleet.cli.store_option import add_store_arguments, resolve_store
from rayfleet.platform.config.spec import VersionSpec
from rayfleet.platform.scoring import DEFAULT_BATCH_SIZE

__all__ = ["register"]


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``batch``."""
    batch = commands.add_parser(
        "batch",
        help="score Parquet files with a version on Ray Data",
        description="Score INPUT (Parquet file or folder, any pyarrow URI) into the "
        "Parquet folder OUTPUT, which appears only when the job succeeds. Put INPUT "
        "and OUTPUT before options that take several values.",
    )
    batch.add_argument(
        "input",
        help="Parquet file or folder: a path, s3://, gs://; a request log's day "
        "folder replays that day's traffic",
    )
    batch.add_argument("output", help="Parquet folder to create: a path, s3://, gs://")
    add_store_arguments(batch)
    batch.add_argument("--model", required=True)
    batch.add_argument("--version", required=True)
    batch.add_argument(
        "--compare", metavar="V2", help="also score V2: agreement, drift, report"
    )
    batch.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE)
    batch.add_argument(
        "--concurrency", type=int, help="actors (default: as many as the cluster fits)"
    )
    batch.add_argument("--num-cpus", type=float, default=1.0, help="CPUs per actor")
    batch.add_argument("--num-gpus", type=float, default=0.0, help="GPUs per actor")
    batch.add_argument(
        "--input-columns",
        nargs="+",
        metavar="COL",
        help="columns or patterns ('pixel_*') stacked in order into the input "
        "(default: a list column named like the input, else every feature column)",
    )
    batch.add_argument(
        "--passthrough", nargs="+", metavar="COL", help="columns copied to the output"
    )
    batch.add_argument(
        "--labels", default="target", help="label column for --compare's accuracy"
    )
    batch.add_argument(
        "--max-error-share",
        type=float,
        default=0.01,
        help="fail (exit 1, no OUTPUT) when more rows than this share are bad",
    )
    batch.add_argument(
        "--errors", help="bad rows, .jsonl or .parquet (default OUTPUT.errors.jsonl)"
    )
    batch.add_argument("--overwrite", action="store_true")
    batch.add_argument("--address", help="Ray cluster (default: RAY_ADDRESS or local)")
    batch.add_argument("--quiet", action="store_true", help="no progress bars")
    batch.set_defaults(run=_batch)


def _names(values: Sequence[str] | None) -> list[str] | None:
    """Column names given as separate words or comma-separated."""
    if values is None:
        return None
    return [name for value in values for name in value.split(",") if name]


def _batch(args: argparse.Namespace) -> int:
    # Before Ray starts, so a missing store fails in a moment.
    store = resolve_store(args)
    import ray

    from rayfleet.deployments.scoring_job import score

    # Called as a function (tests, notebooks), the caller's Ray may be running.
    ray.init(address=args.address, ignore_reinit_error=True)
    # Off a terminal Ray Data already logs progress as lines instead of bars
    # (it checks stdout), so only --quiet needs handling here.
    if args.quiet:
        ray.data.DataContext.get_current().enable_progress_bars = False
    summary = score(
        store,
        args.model,
        args.version,
        args.input,
        args.output,
        compare=args.compare,
        batch_size=args.batch_size,
        concurrency=args.concurrency,
        spec=VersionSpec(
            name=args.version, num_cpus=args.num_cpus, num_gpus=args.num_gpus
        ),
        input_columns=_names(args.input_columns),
        passthrough=_names(args.passthrough) or (),
        label_column=args.labels,
        max_error_share=args.max_error_share,
        errors_uri=args.errors,
        overwrite=args.overwrite,
    )
    print(summary.describe())
    return 0 if summary.passed else 1
