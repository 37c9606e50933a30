"""``python -m loadtest.step_load``: the run, or one of its two child processes."""

from __future__ import annotations

import sys
from collections.abc import Sequence

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    """``serve`` and ``load`` are the two child processes; anything else runs."""
    argv = list(sys.argv[1:] if argv is None else argv)
    # Each process imports only its own side: the load process must not load Ray,
    # and locust patches the standard library with gevent as it is imported.
    if argv[:1] == ["serve"]:
        from loadtest.step_load.server import serve_main

        return serve_main(argv[1:])
    if argv[:1] == ["load"]:
        from loadtest.step_load.load import load_main

        return load_main(argv[1:])
    from loadtest.step_load.run import run_main

    return run_main(argv)


if __name__ == "__main__":
    sys.exit(main())
