"""``rayfleet rollout``: see or steer rollouts through the admin API of a server."""

from __future__ import annotations

import argparse
import datetime
import json
from collections.abc import Sequence

from rayfleet.cli.admin_client import ACTIONS, history_request, rollout_request
from rayfleet.platform.errors import ConfigError
from rayfleet.platform.rollout.history import MAX_HISTORY_LIMIT, HistoryEntry

__all__ = ["format_history", "register"]

# The default of `rollout history`: a screenful, the last few rollouts.
_TERMINAL_LIMIT = 20
_COLUMNS = ("TIME (UTC)", "KIND", "PHASE", "WEIGHT", "CANARY", "BY", "REASON")


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``rollout``."""
    rollout = commands.add_parser(
        "rollout",
        help="see or steer rollouts (token from $RAYFLEET_ADMIN_TOKEN)",
        description="status: every model's rollout as JSON; history: a model's "
        "recorded decisions with the gates that failed; the others steer a "
        "rollout (they need the admin token in $RAYFLEET_ADMIN_TOKEN).",
    )
    rollout.add_argument("action", choices=["status", "history", *ACTIONS])
    rollout.add_argument("--model", help="the model (every model for status)")
    rollout.add_argument("--weight", type=float, help="canary percent, for weights")
    rollout.add_argument(
        "--limit",
        type=_limit,
        default=_TERMINAL_LIMIT,
        help=f"history: the last N decisions (default {_TERMINAL_LIMIT}, "
        f"at most {MAX_HISTORY_LIMIT})",
    )
    rollout.add_argument(
        "--json", action="store_true", help="history: print JSON, not a table"
    )
    rollout.add_argument("--url", default="http://127.0.0.1:8000")
    rollout.set_defaults(run=_rollout)


def _limit(text: str) -> int:
    """argparse's reading of ``--limit``: a whole number in [1, MAX_HISTORY_LIMIT]."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if not 1 <= value <= MAX_HISTORY_LIMIT:
        raise argparse.ArgumentTypeError(
            f"must lie in [1, {MAX_HISTORY_LIMIT}]: {value}"
        )
    return value


def _rollout(args: argparse.Namespace) -> int:
    if args.action == "history":
        return _history(args)
    action = None if args.action == "status" else args.action
    if action is not None and args.model is None:
        raise ConfigError(f"rollout {action} needs --model")
    status, body = rollout_request(args.url, args.model, action, weight=args.weight)
    if action is None and args.model is not None and status == 200:
        body = body.get(args.model, {"error": f"no model {args.model!r}"})
    print(json.dumps(body, indent=2))
    return 0 if status < 400 else 1


def _history(args: argparse.Namespace) -> int:
    if args.model is None:
        raise ConfigError("rollout history needs --model")
    status, body = history_request(args.url, args.model, args.limit)
    if status >= 400 or args.json:
        print(json.dumps(body, indent=2))
        return 0 if status < 400 else 1
    if not isinstance(body, list):
        raise ConfigError(f"{args.url} answered no history list: {body!r}"[:300])
    try:
        entries = [HistoryEntry.from_dict(item) for item in body]
    except (ValueError, TypeError) as error:
        message = f"{args.url} answered an unreadable history: {error}"
        raise ConfigError(message) from None
    print(format_history(entries), end="")
    return 0


def format_history(entries: Sequence[HistoryEntry]) -> str:
    """A table of ``entries``, one line each, and under a decision its failing gates."""
    if not entries:
        return "no rollout history\n"
    rows = [
        (
            _when(entry.ts),
            entry.kind,
            entry.phase.value,
            f"{entry.weight:g}%",
            entry.canary,
            "validator" if entry.caller is None else entry.caller.describe(),
            entry.reason,
        )
        for entry in entries
    ]
    # Every column but the reason is padded; a long reason runs on, never cut.
    widths = [
        max(len(row[i]) for row in (_COLUMNS, *rows)) for i in range(len(_COLUMNS) - 1)
    ]
    lines = [_line(_COLUMNS, widths)]
    for entry, row in zip(entries, rows, strict=True):
        lines.append(_line(row, widths))
        lines.extend(f"    failed: {gate.describe()}" for gate in entry.failing)
    return "\n".join(lines) + "\n"


def _line(cells: Sequence[str], widths: Sequence[int]) -> str:
    padded = [cell.ljust(width) for cell, width in zip(cells, widths, strict=False)]
    return "  ".join([*padded, *cells[len(widths) :]]).rstrip()


def _when(ts: float) -> str:
    moment = datetime.datetime.fromtimestamp(ts, tz=datetime.UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%S")
