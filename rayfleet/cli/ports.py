"""Whether the ports ``rayfleet up`` is about to open are free, and if not, who
holds them and how to end it.

Checked before Ray starts, so that a port left held (most often by an HAProxy that
an earlier Serve left behind) is named in one paragraph instead of surfacing later
as a stack trace from HAProxy's start-up inside a Serve actor.
"""

from __future__ import annotations

import errno
import os
import socket
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import psutil

from rayfleet.deployments.serve_env import GRPC_PORT, SERVE_ENV

__all__ = [
    "HAPROXY_PORTS",
    "Holder",
    "Port",
    "busy_message",
    "busy_ports",
    "holders",
    "is_held",
    "ports_needed",
]

# Serve 2.60's HAProxy binds these on every interface whatever http_options.host
# says (`bind *:port` in the config it writes); only the port can be moved.
HAPROXY_PORTS: dict[str, tuple[int, str]] = {
    "RAY_SERVE_HAPROXY_STATS_PORT": (8404, "HAProxy stats page"),
    "RAY_SERVE_HAPROXY_METRICS_PORT": (9101, "HAProxy metrics"),
}
_ALL_INTERFACES = "0.0.0.0"
# Enough of a command line to recognise it without flooding the terminal.
_COMMAND_CHARS = 200


@dataclass(frozen=True)
class Port:
    """A TCP port to listen on: the address, and what it is for."""

    host: str
    number: int
    purpose: str
    # Where the number comes from, so the message can say how to move it.
    setting: str

    def __str__(self) -> str:
        host = "*" if self.host in ("", _ALL_INTERFACES) else self.host
        return f"{host}:{self.number} ({self.purpose})"


@dataclass(frozen=True)
class Holder:
    """A process listening on a port; ``pid`` is None when the OS hides it (another
    user's process)."""

    pid: int | None
    command: str


def ports_needed(
    config: Mapping[str, Any], environ: Mapping[str, str] | None = None
) -> list[Port]:
    """The ports a local Serve opens for ``config`` under rayfleet's Serve settings
    (those in ``environ``, ``os.environ`` by default, taking precedence)."""
    env = {**SERVE_ENV, **(os.environ if environ is None else environ)}
    http = config.get("http_options") or {}
    host = str(http.get("host", "127.0.0.1"))
    ports = [
        Port(host, int(http.get("port", 8000)), "HTTP", "http_options.port"),
    ]
    grpc = config.get("grpc_options")
    if grpc:
        port = int(grpc.get("port", GRPC_PORT))
        ports.append(Port(host, port, "gRPC", "grpc_options.port"))
    if env.get("RAY_SERVE_ENABLE_HA_PROXY") == "1":
        for name, (default, purpose) in HAPROXY_PORTS.items():
            number = int(env.get(name) or default)
            ports.append(Port(_ALL_INTERFACES, number, purpose, name))
    return ports


def is_held(port: Port) -> bool:
    """Whether listening on ``port`` would fail because something holds it."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        # As servers do: a closed connection in TIME_WAIT does not hold the port.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((port.host, port.number))
        except OSError as error:
            return error.errno == errno.EADDRINUSE
    return False


def holders(number: int) -> list[Holder]:
    """The processes listening on TCP port ``number``, any address."""
    try:
        connections = psutil.net_connections(kind="tcp")
    except psutil.AccessDenied:
        return []
    pids = sorted(
        {
            conn.pid
            for conn in connections
            if conn.status == psutil.CONN_LISTEN and conn.laddr.port == number
        },
        key=lambda pid: -1 if pid is None else pid,
    )
    return [Holder(pid, _command(pid)) for pid in pids]


def _command(pid: int | None) -> str:
    if pid is None:
        return "a process of another user"
    try:
        words = psutil.Process(pid).cmdline()
    except psutil.Error:
        return "a process that has just exited"
    command = " ".join(words) or "?"
    if len(command) > _COMMAND_CHARS:
        return command[: _COMMAND_CHARS - 3] + "..."
    return command


def busy_ports(ports: Iterable[Port]) -> list[tuple[Port, list[Holder]]]:
    """Each of ``ports`` that is held, with what holds it."""
    return [(port, holders(port.number)) for port in ports if is_held(port)]


def busy_message(busy: list[tuple[Port, list[Holder]]]) -> str:
    """One paragraph: what holds each port, and how to end it or move rayfleet."""
    parts = []
    pids: list[int] = []
    for port, found in busy:
        if not found:
            parts.append(
                f"{port} is in use by a process this user cannot see "
                f"(`sudo ss -ltnp 'sport = :{port.number}'` names it)"
            )
            continue
        names = []
        for holder in found:
            if holder.pid is None:
                names.append(holder.command)
                continue
            names.append(f"pid {holder.pid} ({holder.command})")
            if holder.pid not in pids:
                pids.append(holder.pid)
        parts.append(f"{port} is in use by {', '.join(names)}")
    text = "rayfleet: cannot start: " + "; ".join(parts) + "."
    if pids:
        listed = " ".join(str(pid) for pid in pids)
        text += (
            f" End it with `kill {listed}` (`kill -9 {listed}` if it is still there"
            " a few seconds later): an `haproxy` that names /tmp/haproxy-serve is one"
            " an earlier Ray Serve left behind and is safe to end; if it is a running"
            " Ray cluster, `serve shutdown -y` and then `ray stop` end it cleanly."
        )
    settings = ", ".join(dict.fromkeys(port.setting for port, _ in busy))
    text += f" Or give rayfleet other ports ({settings})."
    return text
