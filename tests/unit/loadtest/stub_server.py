"""A stdlib HTTP server that answers like a model, for the load clients' tests."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler
from typing import Any, ClassVar

from loadtest.common import http_in_thread


class PinnedModel(BaseHTTPRequestHandler):
    """Answers pinned v2 requests: 200 for a version named v..., 404 otherwise;
    ``seen`` lists the versions asked for, in order."""

    seen: ClassVar[list[str]] = []

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length", 0)))
        found = re.fullmatch(r"/app/v2/models/tiny/versions/([^/]+)/infer", self.path)
        version = found.group(1) if found else ""
        self.seen.append(version)
        status = 200 if version.startswith("v") else 404
        self.send_response(status)
        self.send_header("content-length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, format: str, *args: Any) -> None:
        del format, args


@contextmanager
def serving() -> Iterator[str]:
    """A fresh :class:`PinnedModel` server on loopback; its ``/app`` URL."""
    PinnedModel.seen = []
    with http_in_thread(PinnedModel) as port:
        yield f"http://127.0.0.1:{port}/app"
