"""The HAProxy processes Serve started on one Ray node, found and ended by pid.

Serve's HAProxy manager actor runs ``haproxy -f <dir>/<node id>/haproxy.cfg`` as
its child and kills it when Serve shuts down gracefully. When the actor dies
first (``ray stop``, a signal to the whole process group, a shutdown that times
out), HAProxy is orphaned and keeps the HTTP and gRPC ports, answering every
request with a 500. The node id in its config path names the Ray session that
started it, so only that session's HAProxy is ever ended here.
"""

from __future__ import annotations

import contextlib
import itertools
import os

import psutil

__all__ = ["end_haproxy", "haproxy_of_node"]

# HAProxy stops at once on SIGTERM; the wait only covers a busy machine.
_GRACE_S = 5.0


def _config_path(words: list[str]) -> str | None:
    for flag, value in itertools.pairwise(words):
        if flag == "-f":
            return value
    return None


def haproxy_of_node(node_id: str) -> list[psutil.Process]:
    """The live processes whose ``-f`` config lies in Serve's folder for
    ``node_id``."""
    marker = f"{os.sep}{node_id}{os.sep}"
    found = []
    for process in psutil.process_iter(["cmdline"]):
        words = process.info.get("cmdline") or []
        path = _config_path(words)
        if path is not None and marker in path:
            found.append(process)
    return found


def end_haproxy(node_id: str) -> list[int]:
    """End the HAProxy processes ``node_id``'s Serve left running: SIGTERM, a short
    grace period, SIGKILL. Return their pids."""
    processes = haproxy_of_node(node_id)
    for process in processes:
        with contextlib.suppress(psutil.NoSuchProcess):
            process.terminate()
    _, alive = psutil.wait_procs(processes, timeout=_GRACE_S)
    for process in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            process.kill()
    psutil.wait_procs(alive, timeout=_GRACE_S)
    return [process.pid for process in processes]
