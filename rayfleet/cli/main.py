"""The ``rayfleet`` command.

::

    rayfleet up CONFIG [--smoke]             start local Ray, serve CONFIG, block
    rayfleet models ls [STORE]               list models and versions
    rayfleet models push DIR [STORE] --model M --version V [--overwrite]
    rayfleet demo build [STORE]              train and push the digits demo models
    rayfleet check FILE... [--store-check]   check Serve, ray up and KubeRay files
    rayfleet rollout status|history|promote|rollback|pause|resume|weights
             [--model M]                     see or steer rollouts (admin API)
    rayfleet validate [STORE] --model M --candidate V --baseline B [--data F]
                                             judge a version offline; exit 1 on fail
    rayfleet batch INPUT OUTPUT [STORE] --model M --version V [--compare V2]
                                             score Parquet on Ray Data; exit 1 when
                                             too many rows are bad
    rayfleet reference build M V [STORE] [--days N | --since DAY] [--rows N]
                                             rebuild V's reference.parquet from
                                             its request log
    rayfleet --version

STORE is ``--store URI``, or ``--config FILE [--app NAME]`` (the store of a Serve
config's rayfleet application), or else the ``RAYFLEET_STORE`` environment
variable (:mod:`rayfleet.cli.store_option`).

Ray is imported only by the commands that need it (``up``, ``batch``, and ``check``
for Serve configs), so store commands stay quick. Each group of commands has its
module (:mod:`.deploy`: up, check; :mod:`.models`: models, demo; :mod:`.validate`;
:mod:`.rollout`; :mod:`.batch`; :mod:`.reference`) with a ``register`` that adds its
parsers; this one builds the parser and runs the chosen command.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from rayfleet.cli import batch, deploy, models, reference, rollout, validate
from rayfleet.platform.constants import PACKAGE_VERSION
from rayfleet.platform.errors import ConfigError

__all__ = ["main"]

# Each registers its subcommands; `rayfleet --help` lists them in this order.
_COMMAND_GROUPS = (deploy, models, validate, rollout, batch, reference)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rayfleet", description=__doc__.split("\n")[0]
    )
    parser.add_argument(
        "--version", action="version", version=f"%(prog)s {PACKAGE_VERSION}"
    )
    commands = parser.add_subparsers(dest="command", required=True)
    for group in _COMMAND_GROUPS:
        group.register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``rayfleet`` console script."""
    args = _parser().parse_args(argv)
    try:
        code: int = args.run(args)
    except ConfigError as error:
        print(f"rayfleet: {error}", file=sys.stderr)
        return 2
    return code


if __name__ == "__main__":
    sys.exit(main())
