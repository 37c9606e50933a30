"""Where a store command finds its model store: ``--store URI``, else the rayfleet
application of ``--config FILE`` (``--app NAME`` picks one of several), else the
``RAYFLEET_STORE`` environment variable, in that order.

A config lets a team name its store once, in the file it deploys, so the store
commands cannot drift from what is served.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping

from rayfleet.platform.errors import ConfigError

__all__ = ["STORE_ENV", "add_store_arguments", "resolve_store"]

STORE_ENV = "RAYFLEET_STORE"


def add_store_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``--store``, ``--config`` and ``--app`` to a store command's parser."""
    group = parser.add_argument_group(
        "model store",
        f"--store, else the rayfleet application of --config, else ${STORE_ENV}",
    )
    group.add_argument("--store", metavar="URI", help="store URI: path, s3://, gs://")
    group.add_argument(
        "--config",
        metavar="FILE",
        help="a Serve config: use the store of its rayfleet application",
    )
    group.add_argument(
        "--app",
        metavar="NAME",
        help="the rayfleet application of --config, when it has several",
    )


def resolve_store(
    args: argparse.Namespace, environ: Mapping[str, str] | None = None
) -> str:
    """The store URI that ``args`` and the environment name; see the module
    docstring for the order. Raises :class:`ConfigError` when none names one."""
    from rayfleet.cli.serve_config import store_of_config

    if args.app is not None and args.config is None:
        raise ConfigError("--app picks an application of --config; give --config")
    if args.store:
        return str(args.store)
    if args.config is not None:
        return store_of_config(args.config, args.app)
    env = os.environ if environ is None else environ
    store = env.get(STORE_ENV)
    if store:
        return store
    raise ConfigError(
        "no model store: give --store URI, --config FILE (a Serve config with a "
        f"rayfleet application) or set {STORE_ENV}"
    )
