"""``rayfleet rollout`` against a real HTTP endpoint that checks the token."""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from rayfleet.cli.main import main

TOKEN = "unit-test-token"


@pytest.fixture
def server() -> Iterator[tuple[str, list[tuple[str, str, Any]]]]:
    calls: list[tuple[str, str, Any]] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def _reply(self, status: int, body: dict[str, Any]) -> None:
            payload = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def do_GET(self) -> None:
            calls.append(("GET", self.path, None))
            self._reply(200, {"digits": {"rollout": {"phase": "canary"}}})

        def do_POST(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            body = json.loads(self.rfile.read(length)) if length else None
            calls.append(("POST", self.path, body))
            if self.headers.get("authorization") != f"Bearer {TOKEN}":
                self._reply(401, {"error": "missing or wrong bearer token"})
            else:
                self._reply(200, {"rollout": {"phase": "paused"}})

        def log_message(self, *args: Any) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", calls
    httpd.shutdown()
    httpd.server_close()


def test_actions_send_the_token_from_the_environment(
    server: tuple[str, list], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, calls = server
    monkeypatch.setenv("RAYFLEET_ADMIN_TOKEN", TOKEN)
    assert main(["rollout", "pause", "--model", "digits", "--url", url]) == 0
    assert (
        main(
            ["rollout", "weights", "--model", "digits", "--weight", "25", "--url", url]
        )
        == 0
    )
    assert calls == [
        ("POST", "/-/rollouts/digits/pause", None),
        ("POST", "/-/rollouts/digits/weights", {"weight": 25.0}),
    ]


def test_a_wrong_token_exits_one(
    server: tuple[str, list],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    url, _ = server
    monkeypatch.setenv("RAYFLEET_ADMIN_TOKEN", "wrong")
    assert main(["rollout", "rollback", "--model", "digits", "--url", url]) == 1
    assert "bearer token" in capsys.readouterr().out


def test_status_needs_no_token_and_missing_token_is_a_config_error(
    server: tuple[str, list],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    url, _ = server
    monkeypatch.delenv("RAYFLEET_ADMIN_TOKEN", raising=False)
    assert main(["rollout", "status", "--model", "digits", "--url", url]) == 0
    assert '"phase": "canary"' in capsys.readouterr().out
    assert main(["rollout", "promote", "--model", "digits", "--url", url]) == 2
    assert "RAYFLEET_ADMIN_TOKEN" in capsys.readouterr().err


def test_unreachable_server_is_a_clear_error(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["rollout", "status", "--url", "http://127.0.0.1:9"]) == 2
    assert "cannot reach" in capsys.readouterr().err
