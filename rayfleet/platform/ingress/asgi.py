"""Run an ASGI app on one buffered request, without a socket.

The router forwards ``/metrics`` and ``/-/...`` to the Validator through a
deployment handle; the Validator answers them with its own Starlette app, called
here as if the request had arrived over HTTP.
"""

from __future__ import annotations

import asyncio
from typing import Any

from starlette.types import ASGIApp, Message

__all__ = ["ForwardedResponse", "Headers", "call_asgi"]

Headers = list[tuple[bytes, bytes]]
ForwardedResponse = tuple[int, Headers, bytes]


async def call_asgi(
    app: ASGIApp, method: str, path: str, query: bytes, headers: Headers, body: bytes
) -> ForwardedResponse:
    """``(status, headers, body)`` of ``app``'s answer to one request."""
    scope: dict[str, Any] = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": query,
        "root_path": "",
        "headers": headers,
        "client": ("127.0.0.1", 0),
        "server": ("127.0.0.1", 0),
    }
    delivered = False
    status = 500
    response_headers: Headers = []
    chunks: list[bytes] = []

    async def receive() -> Message:
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}
        # The client never disconnects: the answer is buffered whole.
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    async def send(message: Message) -> None:
        nonlocal status, response_headers
        if message["type"] == "http.response.start":
            status = message["status"]
            response_headers = list(message.get("headers", []))
        elif message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))

    await app(scope, receive, send)
    return status, response_headers, b"".join(chunks)
