"""The port check ``rayfleet up`` runs before Ray starts: which ports a config
opens, and a message that names the process holding one."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator

import pytest

from rayfleet.cli.ports import (
    Port,
    busy_message,
    busy_ports,
    holders,
    is_held,
    ports_needed,
)


@pytest.fixture
def held() -> Iterator[int]:
    """A port this test process listens on, on loopback."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        yield int(listener.getsockname()[1])


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_demo_config_needs_http_grpc_and_haproxy_ports() -> None:
    config = {
        "http_options": {"host": "127.0.0.1", "port": 8000},
        "grpc_options": {"port": 9000},
    }
    ports = ports_needed(config, environ={})
    assert [(port.host, port.number) for port in ports] == [
        ("127.0.0.1", 8000),
        ("127.0.0.1", 9000),
        ("0.0.0.0", 8404),
        ("0.0.0.0", 9101),
    ]
    assert [str(port) for port in ports][2:] == [
        "*:8404 (HAProxy stats page)",
        "*:9101 (HAProxy metrics)",
    ]


def test_environment_moves_haproxy_ports_and_turns_them_off() -> None:
    moved = ports_needed(
        {},
        environ={
            "RAY_SERVE_HAPROXY_STATS_PORT": "18404",
            "RAY_SERVE_HAPROXY_METRICS_PORT": "19101",
        },
    )
    assert [port.number for port in moved] == [8000, 18404, 19101]
    without = ports_needed({}, environ={"RAY_SERVE_ENABLE_HA_PROXY": "0"})
    assert [port.number for port in without] == [8000]


def test_a_listening_socket_is_held_and_a_free_port_is_not(held: int) -> None:
    assert is_held(Port("127.0.0.1", held, "HTTP", "http_options.port"))
    # A wildcard bind conflicts with a loopback listener on the same port.
    assert is_held(Port("0.0.0.0", held, "HAProxy stats page", "X"))
    assert not is_held(Port("127.0.0.1", _free_port(), "HTTP", "x"))


def test_holder_is_this_process(held: int) -> None:
    found = holders(held)
    assert [holder.pid for holder in found] == [os.getpid()]
    assert "pytest" in found[0].command or "python" in found[0].command


def test_message_names_pid_command_and_how_to_end_it(held: int) -> None:
    port = Port("127.0.0.1", held, "HTTP", "http_options.port")
    busy = busy_ports([port, Port("127.0.0.1", _free_port(), "gRPC", "x")])
    assert [entry[0] for entry in busy] == [port]
    message = busy_message(busy)
    pid = os.getpid()
    assert f"127.0.0.1:{held} (HTTP) is in use by pid {pid} (" in message
    assert f"`kill {pid}`" in message
    assert "serve shutdown -y" in message
    assert "http_options.port" in message
    # One paragraph.
    assert "\n" not in message
    assert message.startswith("rayfleet: cannot start:")


def test_message_when_the_holder_is_hidden() -> None:
    port = Port("0.0.0.0", 8404, "HAProxy stats page", "RAY_SERVE_HAPROXY_STATS_PORT")
    message = busy_message([(port, [])])
    assert "*:8404 (HAProxy stats page) is in use by a process" in message
    assert "sudo ss -ltnp 'sport = :8404'" in message
    assert "kill" not in message
    assert "RAY_SERVE_HAPROXY_STATS_PORT" in message
