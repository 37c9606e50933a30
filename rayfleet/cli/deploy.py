"""``rayfleet check`` and ``rayfleet up``: a deploy file checked, or served on a
local Ray."""

from __future__ import annotations

import argparse
import sys

__all__ = ["register"]


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``up`` and ``check``."""
    up = commands.add_parser(
        "up", help="start local Ray and serve a config; Ctrl-C or SIGTERM stops it all"
    )
    up.add_argument("config", help="a Serve config file, e.g. configs/demo.yaml")
    up.add_argument(
        "--smoke", action="store_true", help="send a few tritonclient requests once up"
    )
    up.set_defaults(run=_up)

    check = commands.add_parser(
        "check", help="check Serve configs, ray up cluster files, RayService manifests"
    )
    check.add_argument("files", nargs="+", metavar="FILE", help="YAML file to check")
    check.add_argument(
        "--store-check",
        action="store_true",
        help="also read every served version's manifest from its store",
    )
    check.set_defaults(run=_check)


def _up(args: argparse.Namespace) -> int:
    from rayfleet.cli.serve_config import load_serve_config

    config = load_serve_config(args.config)
    # Imports Ray: only once the config is known to be good.
    from rayfleet.cli.up import serve_config_locally

    return serve_config_locally(config, smoke=args.smoke)


def _check(args: argparse.Namespace) -> int:
    from rayfleet.cli.check import check_file

    failed = False
    for path in args.files:
        result = check_file(path, store_check=args.store_check)
        if result.ok:
            print(result.summary())
        for problem in result.problems:
            print(f"rayfleet: {problem}", file=sys.stderr)
        failed = failed or not result.ok
    return 2 if failed else 0
