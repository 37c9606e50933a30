"""The Validator's pages, and the router's routes that forward to them.

Routes of the Validator's app (:func:`build_admin_app`); * marks admin routes::

    GET  /metrics                       Prometheus text
    GET  /-/validation?window_s=300     statistics and rollouts, as JSON
                                        (``&sketches=true``: and each version's
                                        latency sketches of the window)
    GET  /-/dashboard                   the HTML page reading /-/validation
    GET  /-/rollouts                    each model's stable version, plan, rollout
    GET  /-/rollouts/{model}/history    its recorded decisions, oldest first
                                        (``?limit=100``, at most 1000)
    POST /-/rollouts/{model}/{action} * promote, rollback, pause, resume, weights
    POST /-/validations               * queue a pre-deploy validation job
    GET  /-/validations[/{job}]         the jobs, or one job
    GET  /-/openapi.json                these routes as an OpenAPI 3.1 document

Admin routes need ``Authorization: Bearer <token>``, the token being the value
of the spec's ``admin_token_env`` where the Validator runs; without one they
are off. Their bodies are typed models, read as specs are (unknown keys refused):
``weights`` takes :class:`WeightsBody`, the other actions nothing (an empty body
or ``{}``), ``/-/validations`` a :class:`ValidationRequest`. Any body that does
not fit is a 400 naming the field, and one over :data:`ADMIN_MAX_BODY_BYTES` a
413. Clients reach these pages through a router: :func:`forwarding_routes` sends
each request whole to the Validator and answers 503 when it cannot.

An operator's action is recorded with its caller
(:mod:`rayfleet.platform.rollout.history`): the address the router saw it come
from, passed on in :data:`CLIENT_HEADER` (the Validator's app is reached only
through a router, which drops any such header a client sends), and the optional
``X-Rayfleet-Actor`` header, the client's own word. The token is shared, so neither
is an identity. The history route shows callers only to a request with the token;
to others an operator's caller reads ``{"hidden": true}``.
"""

from __future__ import annotations

import asyncio
import hmac
import re
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from pydantic import BaseModel, ValidationError
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from rayfleet.platform.config.store import ModelStore
from rayfleet.platform.constants import DEFAULT_VALIDATION_WINDOW_S
from rayfleet.platform.errors import (
    InvalidInput,
    NotFound,
    ServiceUnavailable,
    StoreError,
    Unauthorized,
)
from rayfleet.platform.ingress.admin_api import (
    ADMIN_MAX_BODY_BYTES,
    NoArguments,
    WeightsBody,
    admin_openapi,
)
from rayfleet.platform.ingress.asgi import ForwardedResponse, Headers
from rayfleet.platform.ingress.http import (
    Handler,
    error_response,
    guarded,
    on_http_error,
    read_body,
)
from rayfleet.platform.rollout import machine as ro
from rayfleet.platform.rollout.controller import ValidatorCore
from rayfleet.platform.rollout.history import (
    ACTOR_HEADER,
    DEFAULT_HISTORY_LIMIT,
    MAX_HISTORY_LIMIT,
    Caller,
    HistoryEntry,
)
from rayfleet.platform.rollout.telemetry import CONTENT_TYPE, render_metrics
from rayfleet.platform.validation.jobs import JobQueue, ValidationRequest

__all__ = [
    "ADMIN_MAX_BODY_BYTES",
    "CLIENT_HEADER",
    "NoArguments",
    "ValidatorCall",
    "WeightsBody",
    "build_admin_app",
    "forwarding_routes",
]

# The Validator's ``http`` method: (method, path, query, headers, body) in,
# (status, headers, body) out.
ValidatorCall = Callable[
    [str, str, bytes, Headers, bytes], Awaitable[ForwardedResponse]
]

# The address an admin request reached the router from, as the router passes it
# on; whatever a client sends under this name is dropped on the way.
CLIENT_HEADER = "x-rayfleet-client"

# What crosses to the Validator and back: credentials, content negotiation and the
# caller's own name in, the body's type and a 503's Retry-After out; nothing else.
_FORWARDED_REQUEST_HEADERS = ("authorization", "content-type", "accept", ACTOR_HEADER)
_FORWARDED_REPLY_HEADERS = (b"content-type", b"retry-after")

_Body = TypeVar("_Body", bound=BaseModel)


def build_admin_app(
    core: ValidatorCore,
    store: ModelStore,
    jobs: JobQueue,
    *,
    admin_token: str | None,
    send_events: Callable[[list[ro.Event]], None],
    dashboard_html: Callable[[], str],
) -> Starlette:
    """The Validator's Starlette app over ``core``.

    ``admin_token`` is the bearer token of the admin routes (``None``: they answer
    401); ``send_events`` hands an operator's rollout events to the webhooks;
    ``store`` checks that a validation job names versions that exist; ``jobs``
    queues those jobs for the Validator's worker.
    """
    spec = core.spec

    def holds_token(request: Request) -> bool:
        if admin_token is None:
            return False
        sent = request.headers.get("authorization", "")
        scheme, _, value = sent.partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(
            value.encode(), admin_token.encode()
        )

    def check_admin(request: Request) -> None:
        if admin_token is None:
            raise Unauthorized(
                f"admin routes are off: set {spec.admin_token_env} "
                "where the Validator runs"
            )
        if not holds_token(request):
            raise Unauthorized("missing or wrong bearer token")

    async def metrics(request: Request) -> Response:
        return Response(render_metrics(core, time.time()), media_type=CONTENT_TYPE)

    async def validation(request: Request) -> Response:
        raw = request.query_params.get("window_s", f"{DEFAULT_VALIDATION_WINDOW_S:g}")
        try:
            window_s = float(raw)
        except ValueError:
            raise InvalidInput(
                f"window_s must be a number of seconds: {raw!r}"
            ) from None
        horizon_s = spec.observations.horizon_s
        if not 0 < window_s <= horizon_s:
            raise InvalidInput(f"window_s must lie in (0, {horizon_s:g}]: {window_s:g}")
        sketches = _flag(request, "sketches")
        now = time.time()
        body = core.snapshot(now, window_s)
        if sketches:
            body["sketches"] = core.latency_sketches(now, window_s)
        return JSONResponse(body)

    async def dashboard(request: Request) -> Response:
        return HTMLResponse(dashboard_html())

    async def rollouts(request: Request) -> Response:
        plans = core.plans()
        return JSONResponse(
            {
                model.name: {
                    "stable": core.stable[model.name],
                    "plan": plans[model.name].to_dict(),
                    "rollout": (
                        state.to_dict()
                        if (state := core.rollouts.get(model.name))
                        else None
                    ),
                    "finished": core.finished[model.name],
                }
                for model in spec.models
            }
        )

    async def act(request: Request) -> Response:
        check_admin(request)
        model, action = request.path_params["model"], request.path_params["action"]
        body = await read_body(request, ADMIN_MAX_BODY_BYTES)
        weight = None
        if action == "weights":
            weight = _parse_body(WeightsBody, body, '{"weight": 25}').weight
        else:
            _parse_body(NoArguments, body, "{} or nothing")
        events = core.act(model, action, time.time(), weight, _caller(request))
        send_events(events)
        state = core.rollouts[model]
        return JSONResponse(
            {"rollout": state.to_dict(), "events": [e.to_dict() for e in events]}
        )

    async def history(request: Request) -> Response:
        limit = _history_limit(request.query_params.get("limit"))
        try:
            # Each entry is a read from the store: off the Validator's event loop.
            entries = await asyncio.to_thread(
                core.read_history, request.path_params["model"], limit
            )
        except StoreError as error:
            message = f"cannot read the rollout history: {error}"
            raise ServiceUnavailable(message) from None
        show_callers = holds_token(request)
        return JSONResponse([_history_item(e, show_callers) for e in entries])

    async def submit_validation(request: Request) -> Response:
        check_admin(request)
        job_request = _parse_body(
            ValidationRequest,
            await read_body(request, ADMIN_MAX_BODY_BYTES),
            '{"model": "digits", "candidate": "v2", "baseline": "v1"}',
        )
        names = {
            "model": job_request.model,
            "candidate": job_request.candidate,
            "baseline": job_request.baseline,
        }
        for field, name in names.items():
            _check_store_name(field, name)
        for version in (job_request.candidate, job_request.baseline):
            store.manifest(job_request.model, version)
        job = jobs.submit(job_request)
        return JSONResponse(job.to_dict(), status_code=202)

    async def validation_job(request: Request) -> Response:
        return JSONResponse(jobs.get(request.path_params["job"]).to_dict())

    async def validation_jobs(request: Request) -> Response:
        return JSONResponse([job.to_dict() for job in jobs.jobs.values()])

    async def openapi(request: Request) -> Response:
        return JSONResponse(document)

    def on_error(request: Request, error: Exception) -> Response:
        # A job naming a version the store lacks is the client's mistake.
        if isinstance(error, StoreError):
            error = NotFound(str(error))
        return error_response(request, error)

    table: list[tuple[str, Handler, list[str]]] = [
        ("/metrics", metrics, ["GET"]),
        ("/-/validation", validation, ["GET"]),
        ("/-/dashboard", dashboard, ["GET"]),
        ("/-/rollouts", rollouts, ["GET"]),
        ("/-/rollouts/{model}/history", history, ["GET"]),
        ("/-/rollouts/{model}/{action}", act, ["POST"]),
        ("/-/validations", submit_validation, ["POST"]),
        ("/-/validations", validation_jobs, ["GET"]),
        ("/-/validations/{job}", validation_job, ["GET"]),
        ("/-/openapi.json", openapi, ["GET"]),
    ]
    routes = [Route(p, guarded(h, on_error), methods=m) for p, h, m in table]
    # From the routes themselves, once: a route the document does not describe
    # fails here, when the app is built, not when someone reads the document.
    document = admin_openapi(routes)
    return Starlette(routes=routes, exception_handlers={HTTPException: on_http_error})


def forwarding_routes(call: ValidatorCall, timeout_s: float) -> list[Route]:
    """The router's ``/metrics`` and ``/-/...`` routes, answered by the Validator
    through ``call``; a Validator that fails or takes over ``timeout_s`` is a 503
    with ``Retry-After``."""

    async def forward(request: Request) -> Response:
        headers = [
            (key.lower().encode("latin-1"), value.encode("latin-1"))
            for key, value in request.headers.items()
            if key.lower() in _FORWARDED_REQUEST_HEADERS
        ]
        if request.client is not None:
            headers.append((CLIENT_HEADER.encode(), request.client.host.encode()))
        # The app may sit under a route prefix; the Validator's routes do not.
        rest = request.path_params.get("path")
        path = "/metrics" if rest is None else f"/-/{rest}"
        body = await read_body(request, ADMIN_MAX_BODY_BYTES)
        try:
            status, reply_headers, body = await asyncio.wait_for(
                call(
                    request.method,
                    path,
                    request.url.query.encode(),
                    headers,
                    body,
                ),
                timeout=timeout_s,
            )
        except Exception as error:
            raise ServiceUnavailable(
                f"the Validator is not answering: {error!r}"
            ) from None
        kept = {
            k.decode(): v.decode()
            for k, v in reply_headers
            if k.lower() in _FORWARDED_REPLY_HEADERS
        }
        return Response(body, status_code=status, headers=kept)

    handler = guarded(forward, error_response)
    return [
        Route("/metrics", handler, methods=["GET"]),
        Route("/-/{path:path}", handler, methods=["GET", "POST"]),
    ]


def _caller(request: Request) -> Caller:
    """Who sent an admin request: the router's word for the address, the
    client's for its name; both sanitised."""
    client = request.headers.get(CLIENT_HEADER)
    if client is None and request.client is not None:
        client = request.client.host
    return Caller.of(client, request.headers.get(ACTOR_HEADER))


def _flag(request: Request, name: str) -> bool:
    """A ``?name=true|false`` query flag, false when absent; InvalidInput otherwise."""
    raw = request.query_params.get(name, "false")
    if raw not in ("true", "false"):
        raise InvalidInput(f"{name} must be true or false: {raw[:32]!r}")
    return raw == "true"


def _history_limit(raw: str | None) -> int:
    """``?limit=``: a whole number in [1, MAX_HISTORY_LIMIT]; the default if absent."""
    if raw is None:
        return DEFAULT_HISTORY_LIMIT
    # ASCII digits only (int() takes "+5", " 5" and "1_0"); seven of them are
    # already over the maximum, so int() never reads a long string.
    if re.fullmatch(r"[0-9]{1,7}", raw) and 1 <= int(raw) <= MAX_HISTORY_LIMIT:
        return int(raw)
    raise InvalidInput(
        f"limit must be a whole number in [1, {MAX_HISTORY_LIMIT}]: {raw[:32]!r}"
    )


def _history_item(entry: HistoryEntry, show_caller: bool) -> dict[str, object]:
    """An entry as the history route answers it, its caller hidden unless shown."""
    item = entry.to_dict()
    if entry.caller is not None and not show_caller:
        item["caller"] = {"hidden": True}
    return item


def _parse_body(model: type[_Body], body: bytes, example: str) -> _Body:
    """``body`` read as ``model``; InvalidInput naming each field that is wrong.

    An empty body reads as ``{}``: the model then says which fields it lacks.
    """
    try:
        return model.model_validate_json(body if body.strip() else b"{}")
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}"
            for e in error.errors()
        )
        raise InvalidInput(f"expected a JSON body like {example}: {problems}") from None


def _check_store_name(field: str, name: str) -> None:
    """InvalidInput unless ``name`` is one folder name of the store.

    The job reads ``{store}/{model}/{version}``: a separator or ``..`` would
    reach outside the store, and a control character is no file name at all
    (a NUL makes the filesystem layer raise, not answer "missing").
    """
    if (
        name in (".", "..")
        or any(sep in name for sep in "/\\")
        or any(ord(char) < 0x20 or ord(char) == 0x7F for char in name)
    ):
        raise InvalidInput(
            f"{field}: {name!r} is not a model or version name "
            "(one folder of the store: no separators, control characters or '..')"
        )
