"""Ending the HAProxy a Ray node's Serve left behind: by the node id in its config
path, and nothing else."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import psutil
import pytest

from rayfleet.cli.haproxy import end_haproxy, haproxy_of_node

MINE = "a" * 56
OTHER = "b" * 56


def _lookalike(node_id: str) -> subprocess.Popen[bytes]:
    """A sleeping process whose command line looks like Serve's HAProxy's."""
    script = "import time; time.sleep(120)"
    config = f"/tmp/haproxy-serve/{node_id}/haproxy.cfg"
    return subprocess.Popen([sys.executable, "-c", script, "-db", "-f", config])


@pytest.fixture
def processes() -> Iterator[tuple[subprocess.Popen[bytes], subprocess.Popen[bytes]]]:
    mine, other = _lookalike(MINE), _lookalike(OTHER)
    try:
        yield mine, other
    finally:
        for process in (mine, other):
            process.kill()
            process.wait()


def test_ends_only_the_named_nodes_haproxy(
    processes: tuple[subprocess.Popen[bytes], subprocess.Popen[bytes]],
) -> None:
    mine, other = processes
    assert [p.pid for p in haproxy_of_node(MINE)] == [mine.pid]
    assert end_haproxy(MINE) == [mine.pid]
    # end_haproxy waited for it, and so reaped this test's child.
    assert not psutil.pid_exists(mine.pid)
    assert other.poll() is None
    assert haproxy_of_node(MINE) == []
    assert end_haproxy(MINE) == []
