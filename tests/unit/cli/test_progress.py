"""Progress: a redrawn bar on a terminal, plain lines anywhere else."""

from __future__ import annotations

import io

from rayfleet.cli.progress import ProgressPrinter


class _Stream(io.StringIO):
    def __init__(self, *, terminal: bool) -> None:
        super().__init__()
        self._terminal = terminal

    def isatty(self) -> bool:
        return self._terminal


def _run(stream: _Stream, total: int, step: int) -> str:
    progress = ProgressPrinter(stream)
    for done in range(step, total + step, step):
        progress(min(done, total), total)
    return stream.getvalue()


def test_terminal_gets_a_bar_redrawn_in_place() -> None:
    out = _run(_Stream(terminal=True), total=450, step=64)
    assert out.count("\r") == 8
    assert out.endswith("] 450/450 rows\n")
    assert "[" + "#" * 30 + "]" in out


def test_log_gets_a_line_per_tenth_and_no_carriage_returns() -> None:
    out = _run(_Stream(terminal=False), total=1000, step=7)
    lines = out.splitlines()
    assert "\r" not in out
    assert len(lines) == 11
    assert lines[0] == "  7/1000 rows (0%)"
    assert lines[-1] == "  1000/1000 rows (100%)"
    percents = [int(line.split("(")[1].rstrip("%)")) for line in lines]
    assert percents == sorted(percents)
    assert all(p // 10 == i for i, p in enumerate(percents[1:], start=1))


def test_log_with_few_batches_prints_each() -> None:
    out = _run(_Stream(terminal=False), total=100, step=50)
    assert out.splitlines() == ["  50/100 rows (50%)", "  100/100 rows (100%)"]


def test_empty_dataset_prints_once() -> None:
    stream = _Stream(terminal=False)
    progress = ProgressPrinter(stream)
    progress(0, 0)
    progress(0, 0)
    assert stream.getvalue() == "  0/0 rows (100%)\n"
