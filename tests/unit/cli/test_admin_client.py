"""``rayfleet rollout`` against a real HTTP endpoint that checks the token."""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from rayfleet.cli.admin_client import actor
from rayfleet.cli.main import main
from rayfleet.platform.rollout import Phase
from rayfleet.platform.rollout.history import HistoryEntry

TOKEN = "unit-test-token"

ROLLBACK = HistoryEntry(
    ts=1_764_403_211.0,
    app="demo",
    model="digits",
    kind="rolled_back",
    canary="v2",
    stable="v1",
    phase=Phase.ROLLED_BACK,
    weight=0.0,
    reason="operator: rollback",
    caller=None,
).to_dict()


@pytest.fixture
def posted_headers() -> list[dict[str, str]]:
    """The headers of each POST the server below takes, in order."""
    return []


@pytest.fixture
def server(
    posted_headers: list[dict[str, str]],
) -> Iterator[tuple[str, list[tuple[str, str, Any]]]]:
    calls: list[tuple[str, str, Any]] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def _reply(self, status: int, body: Any) -> None:
            payload = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def do_GET(self) -> None:
            calls.append(("GET", self.path, self.headers.get("authorization")))
            if self.path.startswith("/-/rollouts/digits/history"):
                self._reply(200, [ROLLBACK])
            elif "/history" in self.path:
                self._reply(404, {"error": "no model 'fraud'"})
            else:
                self._reply(200, {"digits": {"rollout": {"phase": "canary"}}})

        def do_POST(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            body = json.loads(self.rfile.read(length)) if length else None
            calls.append(("POST", self.path, body))
            posted_headers.append({k.lower(): v for k, v in self.headers.items()})
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


def test_actions_say_who_sends_them(
    server: tuple[str, list],
    posted_headers: list[dict[str, str]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    url, _ = server
    monkeypatch.setenv("RAYFLEET_ADMIN_TOKEN", TOKEN)
    monkeypatch.setenv("USER", "alice\x1bé")
    monkeypatch.setattr("socket.gethostname", lambda: "laptop")
    assert actor() == "aliceé@laptop"
    assert main(["rollout", "pause", "--model", "digits", "--url", url]) == 0
    # http.server reads header values as latin-1, as Starlette does.
    assert [h["x-rayfleet-actor"] for h in posted_headers] == ["aliceé@laptop"]


def test_an_actor_outside_latin_1_still_crosses(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("USER", "李")
    monkeypatch.setattr("socket.gethostname", lambda: "host")
    assert actor() == "?@host"


def test_history_prints_a_table_or_json(
    server: tuple[str, list],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    url, calls = server
    monkeypatch.delenv("RAYFLEET_ADMIN_TOKEN", raising=False)
    assert main(["rollout", "history", "--model", "digits", "--url", url]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].startswith("TIME (UTC)")
    assert "rolled_back  0%      v2      validator  operator: rollback" in out
    monkeypatch.setenv("RAYFLEET_ADMIN_TOKEN", TOKEN)
    argv = ["rollout", "history", "--model", "digits", "--limit", "5", "--json"]
    assert main([*argv, "--url", url]) == 0
    assert json.loads(capsys.readouterr().out) == [ROLLBACK]
    # The token goes along when there is one: the server then shows callers.
    assert calls == [
        ("GET", "/-/rollouts/digits/history?limit=20", None),
        ("GET", "/-/rollouts/digits/history?limit=5", f"Bearer {TOKEN}"),
    ]


def test_history_of_an_unknown_model_exits_one(
    server: tuple[str, list], capsys: pytest.CaptureFixture[str]
) -> None:
    url, _ = server
    assert main(["rollout", "history", "--model", "fraud", "--url", url]) == 1
    assert json.loads(capsys.readouterr().out) == {"error": "no model 'fraud'"}
