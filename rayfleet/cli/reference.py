"""``rayfleet reference build``: refresh a version's ``reference.parquet`` from the
inputs its request log holds, so production traffic becomes the baseline that
input drift is measured against."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from datetime import date, datetime, timedelta, timezone

from rayfleet.cli.store_option import add_store_arguments, resolve_store
from rayfleet.platform.config.store import ModelStore
from rayfleet.platform.errors import ConfigError
from rayfleet.platform.requestlog import DEFAULT_REFERENCE_ROWS, build_reference

__all__ = ["DEFAULT_DAYS", "register"]

# A week of traffic: every weekday and the weekend, without last month's.
DEFAULT_DAYS = 7


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``reference build``."""
    reference = commands.add_parser(
        "reference", help="a version's reference data"
    ).add_subparsers(dest="reference_command", required=True)
    build = reference.add_parser(
        "build",
        help="rebuild a version's reference.parquet from its request log",
        description="Sample the inputs the request log holds for MODEL/VERSION "
        "(the spec's request_log) and write them, summarized as the router "
        "summarizes requests, as the version's reference.parquet: what the "
        "Validator tests input drift against.",
    )
    build.add_argument("model")
    build.add_argument("version")
    add_store_arguments(build)
    days = build.add_mutually_exclusive_group()
    days.add_argument(
        "--days",
        type=int,
        default=DEFAULT_DAYS,
        help=f"the last N UTC days, today included (default {DEFAULT_DAYS})",
    )
    days.add_argument(
        "--since", type=date.fromisoformat, help="from this UTC day on (YYYY-MM-DD)"
    )
    build.add_argument(
        "--rows",
        type=int,
        default=DEFAULT_REFERENCE_ROWS,
        help="rows to keep, a uniform sample (default %(default)s)",
    )
    build.add_argument("--seed", type=int, default=0, help="of the sample")
    build.set_defaults(run=_build)


def _today() -> date:
    return datetime.now(timezone.utc).date()


def first_day(
    days: int, since: date | None, today: Callable[[], date] = _today
) -> date:
    """The first UTC day to read: ``since``, else ``days`` days back from today."""
    if since is not None:
        return since
    if days < 1:
        raise ConfigError(f"--days must be at least 1: {days}")
    return today() - timedelta(days=days - 1)


def _build(args: argparse.Namespace) -> int:
    store = ModelStore(resolve_store(args))
    built = build_reference(
        store,
        args.model,
        args.version,
        since=first_day(args.days, args.since),
        rows=args.rows,
        seed=args.seed,
    )
    uri = store.write_reference(args.model, args.version, built.table)
    first, last = built.days[0].isoformat(), built.days[-1].isoformat()
    print(
        f"{args.model}/{args.version}: {built.table.num_rows} of "
        f"{built.logged_rows} logged rows ({first} to {last}, {built.parts} part(s)) "
        f"-> {uri}"
    )
    return 0
