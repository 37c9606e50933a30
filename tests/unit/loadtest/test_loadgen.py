"""The load generator's subprocess reports its measured window's edges."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from loadtest.loadgen import run_load_subprocess


class _Ok(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length", 0)))
        self.send_response(200)
        self.send_header("content-length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, format: str, *args: Any) -> None:
        del format, args


@pytest.fixture
def url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Ok)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/infer"
    finally:
        server.shutdown()
        server.server_close()


def test_the_window_opens_and_closes_around_the_measured_requests(
    url: str, tmp_path: Path
) -> None:
    edges: list[str] = []
    result = run_load_subprocess(
        url, b"{}", {}, 2, 0.3, str(tmp_path), window=edges.append
    )
    assert edges == ["start", "end"]
    assert result.requests > 0
    assert result.errors == {}
    assert list(tmp_path.iterdir()) == []  # the body's file is gone
