"""``rayfleet rollout``: see or steer rollouts through the admin API of a server."""

from __future__ import annotations

import argparse
import json

from rayfleet.cli.admin_client import ACTIONS, rollout_request
from rayfleet.platform.errors import ConfigError

__all__ = ["register"]


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``rollout``."""
    rollout = commands.add_parser(
        "rollout", help="see or steer rollouts (token from $RAYFLEET_ADMIN_TOKEN)"
    )
    rollout.add_argument("action", choices=["status", *ACTIONS])
    rollout.add_argument("--model", help="the model (every model for status)")
    rollout.add_argument("--weight", type=float, help="canary percent, for weights")
    rollout.add_argument("--url", default="http://127.0.0.1:8000")
    rollout.set_defaults(run=_rollout)


def _rollout(args: argparse.Namespace) -> int:
    action = None if args.action == "status" else args.action
    if action is not None and args.model is None:
        raise ConfigError(f"rollout {action} needs --model")
    status, body = rollout_request(args.url, args.model, action, weight=args.weight)
    if action is None and args.model is not None and status == 200:
        body = body.get(args.model, {"error": f"no model {args.model!r}"})
    print(json.dumps(body, indent=2))
    return 0 if status < 400 else 1
