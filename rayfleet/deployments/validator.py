"""Validator: one replica that keeps the statistics and runs the rollouts.

It wires :class:`~rayfleet.platform.rollout.controller.ValidatorCore` to Serve: routers
send it observations (``ingest``) and ask it for traffic plans (``plans``); a loop
evaluates the rollouts every ``evaluate_every_s`` and sends their events to the
webhooks; ``http`` answers the pages the router forwards (``/metrics``,
``/-/validation``, ``/-/dashboard``, ``/-/rollouts``). Nothing on a request's path
waits on it: if it is down, routers keep serving on their last plan.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import os
import time
from importlib import resources
from typing import Any

import numpy as np
from pydantic import ValidationError
from ray import serve
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from rayfleet.platform.config.spec import PlatformSpec
from rayfleet.platform.config.store import ModelStore
from rayfleet.platform.errors import (
    ConfigError,
    InvalidInput,
    NotFound,
    RayfleetError,
    StoreError,
    Unauthorized,
)
from rayfleet.platform.ingress.asgi import ForwardedResponse, call_asgi
from rayfleet.platform.ingress.http import error_response, guarded, on_http_error
from rayfleet.platform.rollout import machine as ro
from rayfleet.platform.rollout.controller import ValidatorCore
from rayfleet.platform.rollout.telemetry import CONTENT_TYPE, render_metrics
from rayfleet.platform.rollout.webhooks import WebhookSender
from rayfleet.platform.serving.counters import ReplicaReport
from rayfleet.platform.validation.compare import reference_features
from rayfleet.platform.validation.jobs import Job, JobQueue, ValidationRequest
from rayfleet.platform.validation.observation import ObservationRow
from rayfleet.platform.validation.predeploy import validate_versions

__all__ = ["VALIDATOR_NAME", "Validator"]

logger = logging.getLogger("ray.serve")

VALIDATOR_NAME = "Validator"


def _references(
    spec: PlatformSpec, store: ModelStore
) -> dict[tuple[str, str], dict[str, np.ndarray]]:
    references = {}
    for model in spec.models:
        for version in model.versions:
            try:
                table = store.reference(model.name, version.name, version.uri)
            except (OSError, StoreError) as error:
                logger.warning(
                    "no reference for %s/%s: %s", model.name, version.name, error
                )
                continue
            if table is not None:
                references[(model.name, version.name)] = reference_features(table)
    return references


@serve.deployment(name=VALIDATOR_NAME, num_replicas=1, max_ongoing_requests=64)
class Validator:
    """The one replica holding statistics, rollouts and the pages about them."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec = PlatformSpec.model_validate(spec)
        # Rollout state is kept per application, so two apps sharing a store
        # never share a rollout.
        app_name = serve.get_replica_context().app_name
        self.app_name = app_name
        store = ModelStore(self.spec.store)
        self.core = ValidatorCore(
            self.spec, app_name, store, _references(self.spec, store), time.time()
        )
        self.webhooks = [WebhookSender(hook) for hook in self.spec.webhooks]
        # Rollouts started while loading (a new canary in the config) are sent
        # once the loop runs: webhook senders need the replica's event loop.
        self._unsent = list(self.core.events)
        self.http_app = _validator_app(self)
        self.store = store
        self.jobs = JobQueue()
        self._loop: asyncio.Task[None] | None = None
        self._worker: asyncio.Task[None] | None = None
        self._ready_cache: tuple[float, dict[tuple[str, str], bool]] | None = None

    def _ensure_loop(self) -> None:
        # Started on the first call, from the replica's event loop.
        loop = asyncio.get_running_loop()
        if self._loop is None or self._loop.done():
            self._loop = loop.create_task(self._control_loop())
        if self._worker is None or self._worker.done():
            self._worker = loop.create_task(self._validation_worker())

    async def _validation_worker(self) -> None:
        """Run queued pre-deploy validations one at a time, off the event loop."""
        while True:
            job = await self.jobs.pending.get()
            job.status, job.started_at = "running", time.time()

            def progress(done: int, total: int, job: Job = job) -> None:
                job.rows_done, job.rows_total = done, total

            request = job.request
            try:
                report = await asyncio.to_thread(
                    validate_versions,
                    self.store,
                    request.model,
                    request.candidate,
                    request.baseline,
                    data=request.data,
                    batch_size=request.batch_size,
                    progress=progress,
                )
            except (ConfigError, RayfleetError) as error:
                job.status, job.error = "error", str(error)
            except Exception as error:  # a bad job must not stop the queue
                logger.exception("validation job %s failed", job.id)
                job.status, job.error = "error", f"{type(error).__name__}: {error}"
            else:
                job.report = report.to_dict()
                job.status = "passed" if report.passed else "failed"
            job.finished_at = time.time()

    async def ingest(
        self, rows: list[ObservationRow], router: str, dropped: int
    ) -> int:
        """Take a batch of observations from a router."""
        self._ensure_loop()
        return self.core.ingest(rows, router, dropped)

    async def replica_report(self, reports: list[dict[str, Any]]) -> None:
        """Take the request counters of one replica (a model or router replica)."""
        self._ensure_loop()
        self.core.report_replicas(
            [ReplicaReport.from_dict(report) for report in reports], time.time()
        )

    async def plans(self) -> dict[str, dict[str, Any]]:
        """Every model's traffic plan, as routers poll it."""
        self._ensure_loop()
        return {model: plan.to_dict() for model, plan in self.core.plans().items()}

    async def http(
        self,
        method: str,
        path: str,
        query: bytes,
        headers: list[tuple[bytes, bytes]],
        body: bytes,
    ) -> ForwardedResponse:
        """Answer one HTTP request the router forwarded."""
        self._ensure_loop()
        return await call_asgi(self.http_app, method, path, query, headers, body)

    def send_events(self, events: list[ro.Event]) -> None:
        """Hand events to every webhook (queued; delivery never blocks)."""
        for event in events:
            logger.info("rollout event: %s", event.to_dict())
            for sender in self.webhooks:
                sender.send(event.to_dict())

    async def _readiness(self) -> dict[tuple[str, str], bool]:
        now = time.monotonic()
        if self._ready_cache and now - self._ready_cache[0] < 2.0:
            return self._ready_cache[1]
        status = await asyncio.to_thread(serve.status)
        deployments = status.applications[self.app_name].deployments
        ready = {}
        for model in self.spec.models:
            for version in model.versions:
                name = f"{model.name}:{version.name}"
                in_router = version.placement == "router"
                ready[(model.name, version.name)] = in_router or (
                    name in deployments and deployments[name].status == "HEALTHY"
                )
        self._ready_cache = (now, ready)
        return ready

    async def _control_loop(self) -> None:
        every = min(
            (m.rollout.evaluate_every_s for m in self.spec.models if m.rollout),
            default=5.0,
        )
        self.send_events(self._unsent)
        self._unsent = []
        while True:
            try:
                ready = await self._readiness()
                self.send_events(self.core.tick(time.time(), ready))
            except Exception:  # the loop must outlive any one bad evaluation
                logger.exception("rollout evaluation failed; retrying")
            await asyncio.sleep(every)


def _admin_token(spec: PlatformSpec) -> str | None:
    return os.environ.get(spec.admin_token_env) or None


def _check_admin(request: Request, spec: PlatformSpec) -> None:
    token = _admin_token(spec)
    if token is None:
        raise Unauthorized(
            f"admin routes are off: set {spec.admin_token_env} where the Validator runs"
        )
    sent = request.headers.get("authorization", "")
    scheme, _, value = sent.partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(
        value.encode(), token.encode()
    ):
        raise Unauthorized("missing or wrong bearer token")


def _dashboard_html() -> str:
    return (
        resources.files("rayfleet.deployments")
        .joinpath("dashboard.html")
        .read_text(encoding="utf-8")
    )


def _validator_app(validator: Validator) -> Starlette:
    core, spec = validator.core, validator.spec

    async def metrics(request: Request) -> Response:
        return Response(render_metrics(core, time.time()), media_type=CONTENT_TYPE)

    async def validation(request: Request) -> Response:
        raw = request.query_params.get("window_s", "300")
        try:
            window_s = float(raw)
        except ValueError:
            raise InvalidInput(
                f"window_s must be a number of seconds: {raw!r}"
            ) from None
        if not 0 < window_s <= spec.validation.horizon_s:
            raise InvalidInput(
                f"window_s must lie in (0, {spec.validation.horizon_s:g}]: {window_s:g}"
            )
        return JSONResponse(core.snapshot(time.time(), window_s))

    async def dashboard(request: Request) -> Response:
        return HTMLResponse(_dashboard_html())

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
        _check_admin(request, spec)
        model, action = request.path_params["model"], request.path_params["action"]
        weight = None
        if action == "weights":
            try:
                weight = float((await request.json())["weight"])
            except (ValueError, KeyError, TypeError):
                raise InvalidInput('weights takes a JSON body {"weight": 25}') from None
        events = core.act(model, action, time.time(), weight)
        validator.send_events(events)
        state = core.rollouts[model]
        return JSONResponse(
            {"rollout": state.to_dict(), "events": [e.to_dict() for e in events]}
        )

    async def submit_validation(request: Request) -> Response:
        _check_admin(request, spec)
        try:
            job_request = ValidationRequest.model_validate_json(await request.body())
        except ValidationError as error:
            raise InvalidInput(
                "expected a JSON body like "
                '{"model": "digits", "candidate": "v2", "baseline": "v1"}: '
                + "; ".join(
                    f"{'.'.join(map(str, e['loc']))}: {e['msg']}"
                    for e in error.errors()
                )
            ) from None
        for version in (job_request.candidate, job_request.baseline):
            validator.store.manifest(job_request.model, version)
        job = validator.jobs.submit(job_request)
        return JSONResponse(job.to_dict(), status_code=202)

    async def validation_job(request: Request) -> Response:
        return JSONResponse(validator.jobs.get(request.path_params["job"]).to_dict())

    async def validation_jobs(request: Request) -> Response:
        return JSONResponse([job.to_dict() for job in validator.jobs.jobs.values()])

    async def on_error(request: Request, error: Exception) -> Response:
        if isinstance(error, StoreError):
            error = NotFound(str(error))
        return error_response(request, error)

    table = [
        ("/metrics", metrics, ["GET"]),
        ("/-/validation", validation, ["GET"]),
        ("/-/dashboard", dashboard, ["GET"]),
        ("/-/rollouts", rollouts, ["GET"]),
        ("/-/rollouts/{model}/{action}", act, ["POST"]),
        ("/-/validations", submit_validation, ["POST"]),
        ("/-/validations", validation_jobs, ["GET"]),
        ("/-/validations/{job}", validation_job, ["GET"]),
    ]
    return Starlette(
        routes=[Route(p, guarded(h, on_error), methods=m) for p, h, m in table],
        exception_handlers={HTTPException: on_http_error},
    )
