"""``x-request-id``: every answer of the router carries one, and the request log
and the logs name the request by it.

A client's own id is kept when it is safe to send back: 1 to 128 characters of
letters, digits and ``. _ : -`` (UUIDs, ULIDs, trace ids, Serve's and HAProxy's
own ids all are). Anything else, or no id at all, gets a new one (a UUID4 in hex),
so a value the client chose never reaches a response header unchecked.

Behind Ray Serve the router's app is wrapped by Serve's own middleware, which
answers with the request's ``x-request-id`` as it arrived, and puts one of its own
in the request when the client sent none: the app then finds a safe id in the
request and adds nothing, or the response would carry the header twice. Only
when it replaces an unsafe id does it add its own, beside Serve's copy of the
client's (``host_echoes``).
"""

from __future__ import annotations

import re
import uuid

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = [
    "REQUEST_ID_HEADER",
    "RequestIdMiddleware",
    "new_request_id",
    "request_id_of",
    "resolve_request_id",
    "safe_request_id",
]

REQUEST_ID_HEADER = "x-request-id"
_HEADER = REQUEST_ID_HEADER.encode()
_SAFE = re.compile(r"[A-Za-z0-9._:-]{1,128}")
# Where the middleware leaves the id for the handlers, in the ASGI scope.
_SCOPE_KEY = "rayfleet.request_id"


def safe_request_id(value: str | None) -> str | None:
    """``value`` when it is a safe request id, else ``None``."""
    if value is not None and _SAFE.fullmatch(value):
        return value
    return None


def new_request_id() -> str:
    """A fresh request id."""
    return uuid.uuid4().hex


def resolve_request_id(value: str | None) -> str:
    """The client's id when it is safe, else a new one."""
    return safe_request_id(value) or new_request_id()


def request_id_of(request: Request) -> str:
    """The id :class:`RequestIdMiddleware` gave ``request``; in an app without
    it (the Validator's, which the router forwards requests to), the request's
    own header when safe, else a new id."""
    found = request.scope.get(_SCOPE_KEY)
    if isinstance(found, str):
        return found
    return resolve_request_id(request.headers.get(REQUEST_ID_HEADER))


class RequestIdMiddleware:
    """Gives every HTTP request an id and every answer its ``x-request-id``.

    ``host_echoes``: the server around the app already answers with the
    request's own header (Ray Serve does); the header is then added only when
    the client's id was replaced.
    """

    def __init__(self, app: ASGIApp, *, host_echoes: bool = False) -> None:
        self.app = app
        self.host_echoes = host_echoes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        sent = None
        for name, value in scope["headers"]:
            if name == _HEADER:
                sent = value.decode("latin-1")
                break
        request_id = resolve_request_id(sent)
        scope[_SCOPE_KEY] = request_id
        if self.host_echoes and request_id == sent:
            await self.app(scope, receive, send)
            return
        header = (_HEADER, request_id.encode())

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [
                    (name, value)
                    for name, value in message.get("headers", ())
                    if name.lower() != _HEADER
                ]
                headers.append(header)
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_id)
