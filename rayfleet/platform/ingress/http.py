"""The router's HTTP app: decode a wire format, ask the service, encode.

Routes (KServe v2 / Open Inference Protocol, plus v1 and Arrow)::

    GET  /v2                                     server metadata
    GET  /v2/health/live | /v2/health/ready
    GET  /v2/models/{m}[/versions/{v}]           model metadata
    GET  /v2/models/{m}[/versions/{v}]/ready
    POST /v2/models/{m}[/versions/{v}]/infer     JSON, binary tensors, or Arrow IPC
    POST /v1/models/{m}:predict                  {"instances": ...}

Every response carries ``x-model-version`` when a version was chosen: the name as
the traffic plan spells it, never a value copied from the request; and every
response carries ``x-request-id`` (:mod:`.request_id`), the id the request log
keeps. Errors are raised as :mod:`rayfleet.platform.errors` types and turned into
JSON here, once.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route
from starlette.types import Lifespan

from rayfleet.platform.errors import (
    PayloadTooLarge,
    RayfleetError,
    ServiceUnavailable,
    error_body,
    http_status,
)
from rayfleet.platform.ingress.request_id import RequestIdMiddleware, request_id_of
from rayfleet.platform.protocol import (
    ARROW_CONTENT_TYPE,
    decode_arrow_request,
    decode_request,
    decode_v1_request,
    encode_arrow_response,
    encode_response,
    encode_v1_response,
    parse_header_length,
)
from rayfleet.platform.serving.service import InferenceService, Outcome
from rayfleet.platform.tracing import Tracing, choice_of

__all__ = [
    "HEADER_LENGTH",
    "VERSION_HEADER",
    "ErrorHandler",
    "Handler",
    "build_http_app",
    "error_response",
    "guarded",
    "on_http_error",
    "read_body",
    "traced",
]

logger = logging.getLogger("ray.serve")

VERSION_HEADER = "x-model-version"
HEADER_LENGTH = "inference-header-content-length"

Handler = Callable[[Request], Awaitable[Response]]
# Synchronous, like error_response itself: answering an error never waits.
ErrorHandler = Callable[[Request, Exception], Response]


def build_http_app(
    service: InferenceService,
    *,
    extra_routes: Sequence[BaseRoute] = (),
    lifespan: Lifespan[Starlette] | None = None,
    host_echoes_request_id: bool = False,
) -> Starlette:
    """The Starlette app serving ``service`` over HTTP.

    ``extra_routes`` are mounted beside the inference routes (the router adds the
    Validator's pages); ``lifespan`` runs the router's background loops.
    ``host_echoes_request_id``: the server running the app answers with the
    request's ``x-request-id`` itself, as Ray Serve does (:mod:`.request_id`).
    With the service's tracing on, each inference request is a span
    (:func:`traced`); the other routes are not traced.
    """
    routes = _InferenceRoutes(service)
    infer_v2: Handler = routes.infer_v2
    predict_v1: Handler = routes.predict_v1
    if service.tracing is not None:
        infer_v2 = traced(infer_v2, service.tracing)
        predict_v1 = traced(predict_v1, service.tracing)
    v2 = "/v2/models/{model}"
    versioned = v2 + "/versions/{version}"
    table: list[tuple[str, Handler, list[str]]] = [
        ("/v2", routes.server_metadata, ["GET"]),
        ("/v2/health/live", routes.live, ["GET"]),
        ("/v2/health/ready", routes.server_ready, ["GET"]),
        (v2, routes.model_metadata, ["GET"]),
        (versioned, routes.model_metadata, ["GET"]),
        (v2 + "/ready", routes.model_ready, ["GET"]),
        (versioned + "/ready", routes.model_ready, ["GET"]),
        (v2 + "/infer", infer_v2, ["POST"]),
        (versioned + "/infer", infer_v2, ["POST"]),
        ("/v1/models/{model}:predict", predict_v1, ["POST"]),
    ]
    guarded_routes = [
        Route(path, guarded(handler, routes.on_error), methods=methods)
        for path, handler, methods in table
    ]
    return Starlette(
        routes=[*guarded_routes, *extra_routes],
        exception_handlers={HTTPException: on_http_error},
        lifespan=lifespan,
        middleware=[
            Middleware(RequestIdMiddleware, host_echoes=host_echoes_request_id)
        ],
    )


class _InferenceRoutes:
    """The handlers of the inference routes, over one service."""

    def __init__(self, service: InferenceService) -> None:
        self.service = service
        self.router_spec = service.spec.router

    def pin_of(self, request: Request) -> str | None:
        return request.path_params.get("version") or request.headers.get(VERSION_HEADER)

    def sticky_of(self, request: Request) -> str | None:
        header = self.router_spec.sticky_header
        return request.headers.get(header) if header else None

    async def infer_v2(self, request: Request) -> Response:
        service = self.service
        model, pin = request.path_params["model"], self.pin_of(request)
        # An unknown model or version is a 404 before any body is read.
        plan = service.plan(model)
        if pin:
            plan.choose(pin=pin)
        body = await read_body(request, self.router_spec.max_body_bytes)
        content_type = request.headers.get("content-type", "").split(";")[0].strip()
        if content_type == ARROW_CONTENT_TYPE:
            infer_request = decode_arrow_request(
                body, max_decoded_bytes=self.router_spec.max_decoded_bytes
            )
        else:
            infer_request = decode_request(
                body,
                parse_header_length(request.headers.get(HEADER_LENGTH)),
                max_decoded_bytes=self.router_spec.max_decoded_bytes,
            )
        outcome = await service.infer(
            model,
            infer_request,
            pin=pin,
            sticky_key=self.sticky_of(request),
            request_id=request_id_of(request),
        )
        headers = _outcome_headers(outcome)
        if content_type == ARROW_CONTENT_TYPE:
            return Response(
                encode_arrow_response(outcome.response),
                media_type=ARROW_CONTENT_TYPE,
                headers=headers,
            )
        encoded = encode_response(
            outcome.response, infer_request.outputs, infer_request.binary_default
        )
        if encoded.header_length is not None:
            headers[HEADER_LENGTH] = str(encoded.header_length)
            media_type = "application/octet-stream"
        else:
            media_type = "application/json"
        return Response(
            b"".join(encoded.chunks), media_type=media_type, headers=headers
        )

    async def predict_v1(self, request: Request) -> Response:
        service = self.service
        model = request.path_params["model"]
        body = await read_body(request, self.router_spec.max_body_bytes)
        pin, sticky_key = self.pin_of(request), self.sticky_of(request)
        version = service.plan(model).choose(pin=pin, sticky_key=sticky_key)
        signature = service.manifest(model, version).signature
        infer_request = decode_v1_request(
            body,
            [spec.name for spec in signature.inputs],
            [spec.datatype for spec in signature.inputs],
            max_decoded_bytes=self.router_spec.max_decoded_bytes,
        )
        outcome = await service.infer(
            model,
            infer_request,
            pin=version,
            request_id=request_id_of(request),
            chosen_by=choice_of(pin, sticky_key),
        )
        return Response(
            encode_v1_response(outcome.response),
            media_type="application/json",
            headers=_outcome_headers(outcome),
        )

    async def server_metadata(self, request: Request) -> Response:
        return _json(self.service.server_metadata())

    async def live(self, request: Request) -> Response:
        return _json({"live": True})

    async def server_ready(self, request: Request) -> Response:
        ready = await self.service.server_ready()
        return _json({"ready": ready}, 200 if ready else 503)

    def known_version(self, model: str, version: str | None) -> str | None:
        """The served version named ``version``, as the traffic plan spells it;
        ``None`` for no name or an unknown one.

        Only this goes into the ``x-model-version`` header: a name from the
        request, echoed as sent, could carry bytes (a NUL, CR LF) that the server
        refuses to write, and the client would get a closed connection, not a 404.
        """
        plan = self.service.plans.get(model)
        if version is None or plan is None:
            return None
        return next((name for name in plan.weights if name == version), None)

    async def model_metadata(self, request: Request) -> Response:
        model, version = (
            request.path_params["model"],
            request.path_params.get("version"),
        )
        metadata = self.service.model_metadata(model, version)
        return _json(metadata, version=self.known_version(model, version))

    async def model_ready(self, request: Request) -> Response:
        model, version = (
            request.path_params["model"],
            request.path_params.get("version"),
        )
        ready = await self.service.model_ready(model, version)
        return _json(
            {"name": model, "ready": ready},
            200 if ready else 503,
            version=self.known_version(model, version),
        )

    def on_error(self, request: Request, error: Exception) -> Response:
        response = error_response(request, error)
        model = request.path_params.get("model")
        version = model and self.known_version(model, self.pin_of(request))
        if version and isinstance(error, RayfleetError):
            response.headers[VERSION_HEADER] = version
        return response


def error_response(request: Request, error: Exception) -> Response:
    """The one translation of an error into an HTTP answer.

    A :class:`RayfleetError` becomes its status with ``{"error": message}``;
    anything else is a bug, logged with its traceback and answered with a generic
    500 that leaks nothing.
    """
    if not isinstance(error, RayfleetError):
        logger.exception(
            "unexpected error on %s (request %s)",
            request.url.path,
            request_id_of(request),
        )
        return _json({"error": "internal error"}, 500)
    headers = {}
    if isinstance(error, ServiceUnavailable):
        headers["Retry-After"] = str(error.retry_after_s)
    return JSONResponse(
        error_body(error), status_code=http_status(error), headers=headers
    )


def traced(handler: Handler, tracing: Tracing) -> Handler:
    """``handler`` inside the request's ``rayfleet.infer`` span, a child of the
    caller's ``traceparent`` when it sent one, from the read of the body to the
    response (or the error, which the span records with its status)."""

    @functools.wraps(handler)
    async def trace(request: Request) -> Response:
        # The scope's path, not request.url.path: Starlette builds a whole URL
        # object for the latter, a tenth of what tracing costs a request.
        with tracing.request_span(
            request.headers,
            {"http.request.method": request.method, "url.path": request.scope["path"]},
        ) as span:
            response = await handler(request)
            span.set_status(response.status_code)
            return response

    return trace


def guarded(handler: Handler, on_error: ErrorHandler) -> Handler:
    """``handler`` with every exception it raises answered by ``on_error``."""

    @functools.wraps(handler)
    async def guard(request: Request) -> Response:
        try:
            return await handler(request)
        except Exception as error:  # the one place request errors end
            return on_error(request, error)

    return guard


async def on_http_error(request: Request, error: Exception) -> Response:
    """Starlette's own 404/405 for unknown routes, as JSON like every error."""
    assert isinstance(error, HTTPException)
    return _json({"error": error.detail}, error.status_code)


def _json(payload: Any, status: int = 200, version: str | None = None) -> Response:
    headers = {VERSION_HEADER: version} if version else None
    return JSONResponse(payload, status_code=status, headers=headers)


async def read_body(request: Request, limit: int) -> bytes:
    """The request's body; PayloadTooLarge past ``limit`` bytes, refused on its
    declared Content-Length when it has one, and never read further than that."""
    declared = request.headers.get("content-length", "")
    # isascii(): isdigit() alone takes "²", which int() refuses. A length with more
    # digits than the limit is over it, without int() reading them all.
    digits = declared.lstrip("0") or "0"
    if (
        declared.isascii()
        and declared.isdigit()
        and (len(digits) > len(str(limit)) or int(digits) > limit)
    ):
        raise PayloadTooLarge(
            f"body of {digits} bytes is over the {limit}-byte limit"
            if len(digits) <= 20
            else f"body is over the {limit}-byte limit"
        )
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"body is over the {limit}-byte limit")
        chunks.append(chunk)
    return b"".join(chunks)


def _outcome_headers(outcome: Outcome) -> dict[str, str]:
    return {
        VERSION_HEADER: outcome.version,
        "x-model-time-ms": f"{outcome.model_ms:.3f}",
    }
