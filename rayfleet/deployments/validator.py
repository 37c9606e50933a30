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
import logging
import os
import time
from importlib import resources
from typing import Any

import numpy as np
from ray import serve

from rayfleet.deployments.health import DeploymentHealth
from rayfleet.deployments.serve_logs import send_to_serve
from rayfleet.platform.background import BackgroundTasks
from rayfleet.platform.config.spec import PlatformSpec
from rayfleet.platform.config.store import ModelStore
from rayfleet.platform.constants import (
    DEFAULT_EVALUATE_EVERY_S,
    VALIDATOR_READY_CACHE_S,
)
from rayfleet.platform.errors import ConfigError, RayfleetError, StoreError
from rayfleet.platform.ingress.admin import build_admin_app
from rayfleet.platform.ingress.asgi import ForwardedResponse, Headers, call_asgi
from rayfleet.platform.rollout import machine as ro
from rayfleet.platform.rollout.controller import ValidatorCore
from rayfleet.platform.rollout.store_writer import BackgroundWriter
from rayfleet.platform.rollout.webhooks import WebhookSender
from rayfleet.platform.serving.aggregate import ObservationSummary
from rayfleet.platform.serving.counters import PoolReport, ReplicaReport
from rayfleet.platform.validation.compare import reference_features
from rayfleet.platform.validation.jobs import Job, JobQueue
from rayfleet.platform.validation.predeploy import validate_versions

__all__ = ["VALIDATOR_NAME", "Validator"]

logger = logging.getLogger("ray.serve")

VALIDATOR_NAME = "Validator"

# How long a shutting-down Validator waits for its queued store writes: a few PUTs
# take well under this, and Serve allows a replica 20 s to stop by default.
WRITER_CLOSE_S = 5.0


def _references(
    spec: PlatformSpec, store: ModelStore
) -> dict[tuple[str, str], dict[str, np.ndarray]]:
    references: dict[tuple[str, str], dict[str, np.ndarray]] = {}
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
        send_to_serve()
        self.background = BackgroundTasks(VALIDATOR_NAME)
        self.spec = PlatformSpec.model_validate(spec)
        # Rollout state is kept per application, so two apps sharing a store
        # never share a rollout.
        app_name = serve.get_replica_context().app_name
        store = ModelStore(self.spec.store)
        # The store is synchronous, and on S3 each state save or history append is
        # a PUT: made on this replica's event loop, one slow write would stall the
        # routers' calls and every page. One thread makes
        # them instead, in the order the core asks.
        self.writer = BackgroundWriter(store, log=logger)
        self.core = ValidatorCore(
            self.spec,
            app_name,
            store,
            _references(self.spec, store),
            time.time(),
            # Serve writes this logger to the replica's log file; the core's own
            # logger has no handler under Serve, and its INFO lines would be lost.
            decision_log=logger,
            writer=self.writer,
        )
        self.webhooks = [WebhookSender(hook) for hook in self.spec.webhooks]
        # Rollouts started while loading (a new canary in the config) are sent
        # once the loop runs: webhook senders need the replica's event loop.
        self._unsent = list(self.core.events)
        self.store = store
        self.jobs = JobQueue()
        self.health = DeploymentHealth(app_name, VALIDATOR_READY_CACHE_S)
        self.http_app = build_admin_app(
            self.core,
            store,
            self.jobs,
            # The replica's environment is fixed when Serve starts it.
            admin_token=os.environ.get(self.spec.admin_token_env) or None,
            send_events=self.send_events,
            dashboard_html=_dashboard_html,
        )

    def _ensure_loop(self) -> None:
        # Started on the first call, from the replica's event loop; started
        # again by the next call if one ever ends.
        self.background.start("rollout evaluation", self._control_loop)
        self.background.start("validation jobs", self._validation_worker)

    def __del__(self) -> None:
        # Serve calls this on graceful shutdown (and Python again on collection).
        self.background.cancel()
        # Absent when __init__ failed before making it.
        writer: BackgroundWriter | None = getattr(self, "writer", None)
        if writer is not None:
            # The last decisions' state and history reach the store, if it answers.
            writer.close(WRITER_CLOSE_S)

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

    async def sync(
        self,
        summary: ObservationSummary,
        router: str,
        dropped: int,
        request_log: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Take what a router observed since its last call, and its request
        log's counts when it keeps one; answer with every model's traffic plan
        (``plans``) and whether the observations were taken (``ingested``).

        A summary that will not merge is logged and refused, never the plans:
        a router must keep following the rollout whatever it sends.
        """
        self._ensure_loop()
        try:
            self.core.ingest(summary, router, dropped, request_log)
        except Exception:
            logger.exception("observations from router %s refused", router)
            ingested = False
        else:
            ingested = True
        plans = {model: plan.to_dict() for model, plan in self.core.plans().items()}
        return {"plans": plans, "ingested": ingested}

    async def replica_report(self, reports: list[dict[str, Any]]) -> None:
        """Take the request counters of one replica (a model or router replica)."""
        self._ensure_loop()
        self.core.report_replicas(
            [ReplicaReport.from_dict(report) for report in reports], time.time()
        )

    async def pool_report(self, reports: list[dict[str, Any]]) -> None:
        """Take what one replica of a pool holds and has loaded and unloaded."""
        self._ensure_loop()
        self.core.report_pools(
            [PoolReport.from_dict(report) for report in reports], time.time()
        )

    async def http(
        self,
        method: str,
        path: str,
        query: bytes,
        headers: Headers,
        body: bytes,
    ) -> ForwardedResponse:
        """Answer one HTTP request the router forwarded."""
        self._ensure_loop()
        return await call_asgi(self.http_app, method, path, query, headers, body)

    def send_events(self, events: list[ro.Event]) -> None:
        """Hand events to every webhook (queued; delivery never blocks).

        The core has logged each one already, as a JSON line with its caller.
        """
        for event in events:
            for sender in self.webhooks:
                sender.send(event.to_dict())

    async def _control_loop(self) -> None:
        every = min(
            (m.rollout.evaluate_every_s for m in self.spec.models if m.rollout),
            default=DEFAULT_EVALUATE_EVERY_S,
        )
        self.send_events(self._unsent)
        self._unsent = []
        while True:
            try:
                ready = (
                    await self.health.versions_ready(self.spec)
                    if self.core.awaiting_canary()
                    else {}
                )
                self.send_events(self.core.tick(time.time(), ready))
            except Exception:  # the loop must outlive any one bad evaluation
                logger.exception("rollout evaluation failed; retrying")
            await asyncio.sleep(every)


def _dashboard_html() -> str:
    return (
        resources.files("rayfleet.deployments")
        .joinpath("dashboard.html")
        .read_text(encoding="utf-8")
    )
