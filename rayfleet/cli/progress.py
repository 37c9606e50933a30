"""Progress of a long command, as rows done of a total, on stderr.

On a terminal it is a bar redrawn in place. Anywhere else (a CI log, a file) a
redrawn bar would leave carriage returns in the text, so it is a plain line at
every tenth of the work instead: few enough lines not to bury the log, often
enough to show a long job is alive.
"""

from __future__ import annotations

import sys
from typing import TextIO

__all__ = ["ProgressPrinter"]

_BAR_WIDTH = 30
_LINE_STEP_PERCENT = 10


class ProgressPrinter:
    """A ``progress(done, total)`` callback that prints to ``stream`` (stderr by
    default): a bar on a terminal, a line per tenth elsewhere."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self._stream = stream if stream is not None else sys.stderr
        self._terminal = self._stream.isatty()
        self._next_percent = 0

    def __call__(self, done: int, total: int) -> None:
        """Report that ``done`` of ``total`` rows are done."""
        if self._terminal:
            self._draw_bar(done, total)
        else:
            self._write_line(done, total)

    def _draw_bar(self, done: int, total: int) -> None:
        filled = int(_BAR_WIDTH * done / total) if total else _BAR_WIDTH
        bar = "#" * filled + "." * (_BAR_WIDTH - filled)
        print(f"\r  [{bar}] {done}/{total} rows", end="", file=self._stream)
        if done >= total:
            print(file=self._stream)
        self._stream.flush()

    def _write_line(self, done: int, total: int) -> None:
        percent = 100 * done // total if total else 100
        if percent < self._next_percent:
            return
        print(f"  {done}/{total} rows ({percent}%)", file=self._stream, flush=True)
        step = _LINE_STEP_PERCENT
        self._next_percent = (percent // step + 1) * step
