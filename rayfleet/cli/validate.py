"""``rayfleet validate``: judge a candidate version against its baseline offline."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from rayfleet.cli.progress import ProgressPrinter
from rayfleet.cli.store_option import add_store_arguments, resolve_store
from rayfleet.platform.config.store import ModelStore

__all__ = ["register"]


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``validate``."""
    validate = commands.add_parser(
        "validate", help="run a candidate and its baseline on a dataset and judge"
    )
    add_store_arguments(validate)
    validate.add_argument("--model", required=True)
    validate.add_argument("--candidate", required=True)
    validate.add_argument("--baseline", required=True)
    validate.add_argument(
        "--data",
        help="Parquet file or folder, e.g. a request log's day folder as it is "
        "(default: the candidate's reference data)",
    )
    validate.add_argument("--batch-size", type=int, default=64)
    validate.add_argument("--json", help="write the report as JSON here")
    validate.add_argument("--html", help="write the report as an HTML page here")
    validate.add_argument("--quiet", action="store_true", help="no progress bar")
    validate.set_defaults(run=_validate)


def _validate(args: argparse.Namespace) -> int:
    store = ModelStore(resolve_store(args))
    from rayfleet.platform.validation.predeploy import validate_versions

    report = validate_versions(
        store,
        args.model,
        args.candidate,
        args.baseline,
        data=args.data,
        batch_size=args.batch_size,
        progress=None if args.quiet else ProgressPrinter(),
    )
    if args.json:
        Path(args.json).write_text(json.dumps(report.to_dict(), indent=2))
    if args.html:
        Path(args.html).write_text(report.to_html())
    for check in report.gates:
        print(f"  {check.describe()}")
    verdict = "PASSED" if report.passed else "FAILED: " + "; ".join(report.failures)
    print(f"{args.model}/{args.candidate} vs {args.baseline}: {verdict}")
    return 0 if report.passed else 1
