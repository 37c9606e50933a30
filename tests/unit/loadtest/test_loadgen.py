"""The load generator's subprocess reports its measured window's edges."""

from __future__ import annotations

from pathlib import Path

from loadtest.loadgen import run_load_subprocess
from tests.unit.loadtest.stub_server import PinnedModel, serving


def test_the_window_opens_and_closes_around_the_measured_requests(
    tmp_path: Path,
) -> None:
    edges: list[str] = []
    with serving() as app:
        result = run_load_subprocess(
            f"{app}/v2/models/tiny/versions/v1/infer",
            b"{}",
            {},
            2,
            0.3,
            str(tmp_path),
            window=edges.append,
        )
    assert edges == ["start", "end"]
    assert result.requests > 0
    assert result.errors == {}
    assert set(PinnedModel.seen) == {"v1"}
    assert list(tmp_path.iterdir()) == []  # the body's file is gone
