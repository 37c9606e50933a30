"""The data plane, free of Ray and HTTP: look up, choose a version, check, infer.

The router's HTTP handlers only decode a wire format into an
:class:`~rayfleet.platform.protocol.InferRequest`, call :meth:`InferenceService.infer`
and encode what comes back. The replicas are reached through a :class:`Backend`, so
route tests can run against an in-memory one and integration tests against Serve.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from rayfleet.platform.config.signature import check_inputs
from rayfleet.platform.config.spec import ModelSpec, PlatformSpec
from rayfleet.platform.config.store import Manifest
from rayfleet.platform.constants import PACKAGE_VERSION
from rayfleet.platform.errors import (
    DeadlineExceeded,
    ModelNotFound,
    RayfleetError,
    http_status,
)
from rayfleet.platform.protocol.types import InferRequest, InferResponse
from rayfleet.platform.runtimes.base import zero_row_outputs
from rayfleet.platform.serving.traffic import TrafficPlan
from rayfleet.platform.tracing import Choice, Tracing, choice_of
from rayfleet.platform.validation.observation import (
    Observation,
    summarize_inputs,
    summarize_outputs,
)

__all__ = [
    "Backend",
    "InferenceService",
    "Outcome",
    "Recorder",
    "ReplicaResult",
    "RequestLogger",
    "initial_plans",
]

logger = logging.getLogger(__name__)

SERVER_NAME = "rayfleet"
SERVER_VERSION = PACKAGE_VERSION


@dataclass(frozen=True)
class ReplicaResult:
    """What a replica returns for one request; ``batch_size`` 0 when no model ran
    (a zero-row request, answered from the signature)."""

    outputs: dict[str, np.ndarray]
    model_ms: float
    batch_size: int


class Backend(Protocol):
    """How the service reaches a version's replicas."""

    async def infer(
        self, model: str, version: str, inputs: dict[str, np.ndarray]
    ) -> ReplicaResult:
        """Run one request on a replica of ``model``/``version``."""
        ...

    async def ready(self, model: str, version: str) -> bool:
        """Whether the version has at least one warm replica."""
        ...


class Recorder(Protocol):
    """Where the service leaves one :class:`Observation` per request; must not
    block (the router's buffer drops when full)."""

    def record(self, observation: Observation) -> None:
        """Keep ``observation`` for the Validator."""
        ...


class RequestLogger(Protocol):
    """Where the service hands every request it ran, with its tensors, for the
    request log (:class:`~rayfleet.platform.requestlog.RequestLog`): it samples,
    and must neither block nor raise."""

    def record(
        self,
        request_id: str,
        model: str,
        version: str,
        status: int,
        latency_ms: float,
        model_ms: float,
        inputs: Mapping[str, np.ndarray],
        outputs: Mapping[str, np.ndarray] | None,
        shadow_of: str | None = None,
    ) -> None:
        """Log the request if it is sampled; ``outputs`` None when it failed."""
        ...


@dataclass
class Outcome:
    """A finished request: the response and where its time went."""

    response: InferResponse
    version: str
    model_ms: float
    batch_size: int
    total_ms: float = field(default=0.0)


class InferenceService:
    """Every model of one :class:`PlatformSpec`, behind one backend."""

    def __init__(
        self,
        spec: PlatformSpec,
        manifests: Mapping[str, Mapping[str, Manifest]],
        backend: Backend,
        recorder: Recorder | None = None,
        rand: Callable[[], float] = random.random,
        request_log: RequestLogger | None = None,
        tracing: Tracing | None = None,
    ) -> None:
        self.spec = spec
        self.manifests = manifests
        self.backend = backend
        self.recorder = recorder
        self.request_log = request_log
        # The ingress opens each request's span; the service names on it the
        # version it chose (None: tracing is off).
        self.tracing = tracing
        self.rand = rand
        self.plans = initial_plans(spec)
        self.shadow_failures = 0
        # Shadow calls run on their own; held here so they are not collected
        # mid-flight.
        self._shadows: set[asyncio.Task[None]] = set()

    def update_plans(self, plans: Mapping[str, TrafficPlan]) -> None:
        """Replace the traffic plans of the models named in ``plans``."""
        self.plans = {
            **self.plans,
            **{m: p for m, p in plans.items() if m in self.plans},
        }

    def plan(self, model: str) -> TrafficPlan:
        """The traffic plan of ``model``; :class:`ModelNotFound` if none."""
        try:
            return self.plans[model]
        except KeyError:
            raise ModelNotFound(
                f"no model {model!r}; models: {sorted(self.plans)}"
            ) from None

    def manifest(self, model: str, version: str) -> Manifest:
        """The manifest of a served version (404 errors when unknown)."""
        self.plan(model).choose(pin=version)
        return self.manifests[model][version]

    async def infer(
        self,
        model: str,
        request: InferRequest,
        *,
        pin: str | None = None,
        sticky_key: str | None = None,
        request_id: str | None = None,
        chosen_by: Choice | None = None,
    ) -> Outcome:
        """Check ``request`` against the chosen version's signature and run it.

        ``request_id`` (the ingress's ``x-request-id``) names the request in the
        request log, which sees every request whose inputs passed the check, and
        on its trace span, with the version chosen and how, when tracing is on:
        ``chosen_by`` says how a caller that chose the version itself, and pins
        it, did (the v1 route chooses before it decodes).
        Raises the typed errors of :mod:`rayfleet.platform.errors`: 404 for an
        unknown model or version, 400 for inputs that do not fit, 504 past the
        router's deadline; the backend raises 500 and 503 errors.
        """
        started = time.perf_counter()
        plan = self.plan(model)
        version = plan.choose(pin=pin, sticky_key=sticky_key, rand=self.rand)
        if self.tracing is not None and self.tracing.request_sampled():
            self.tracing.annotate_choice(
                model,
                version,
                chosen_by or choice_of(pin, sticky_key),
                request_id,
                _rows(request.inputs),
            )
        manifest = self.manifests[model][version]
        # Pairs a shadow's observation with its primary's; the client's id need
        # not be unique, this one is.
        pair_id = None
        checked = False
        try:
            check_inputs(manifest.signature, request.inputs, request.datatypes)
            checked = True
            empty = zero_row_outputs(manifest.signature, request.inputs)
            if empty is not None:
                # Answered from the signature: no model runs an empty batch, and
                # a replica never batches it with others.
                result = ReplicaResult(empty, 0.0, 0)
            else:
                shadow = plan.shadow_target(version, self.rand)
                if shadow is not None:
                    pair_id = uuid.uuid4().hex
                    self._start_shadow(
                        model, shadow, version, request, pair_id, request_id
                    )
                result = await self._call(model, version, request.inputs)
        except RayfleetError as error:
            status = http_status(error)
            self._record(model, version, started, status, request)
            if checked and request_id is not None:
                self._log(request_id, model, version, started, status, request)
            raise
        self._record(model, version, started, 200, request, result, pair_id)
        if request_id is not None:
            self._log(request_id, model, version, started, 200, request, result)
        response = InferResponse(
            model_name=model,
            model_version=version,
            outputs=result.outputs,
            id=request.id,
        )
        return Outcome(
            response=response,
            version=version,
            model_ms=result.model_ms,
            batch_size=result.batch_size,
            total_ms=(time.perf_counter() - started) * 1000,
        )

    async def _call(
        self, model: str, version: str, inputs: dict[str, np.ndarray]
    ) -> ReplicaResult:
        timeout = self.spec.router.request_timeout_s
        try:
            return await asyncio.wait_for(
                self.backend.infer(model, version, inputs), timeout
            )
        except asyncio.TimeoutError:
            raise DeadlineExceeded(
                f"{model}/{version} did not answer within {timeout:g} s"
            ) from None

    def _start_shadow(
        self,
        model: str,
        shadow: str,
        primary: str,
        request: InferRequest,
        pair_id: str | None,
        request_id: str | None,
    ) -> None:
        shadow_signature = self.manifests[model][shadow].signature
        try:
            check_inputs(shadow_signature, request.inputs, request.datatypes)
        except RayfleetError:
            # A candidate with another signature cannot shadow this request.
            self.shadow_failures += 1
            return
        task = asyncio.create_task(
            self._shadow(model, shadow, primary, request, pair_id, request_id)
        )
        self._shadows.add(task)
        task.add_done_callback(self._shadows.discard)

    async def _shadow(
        self,
        model: str,
        shadow: str,
        primary: str,
        request: InferRequest,
        pair_id: str | None,
        request_id: str | None,
    ) -> None:
        """The mirrored call: recorded, never awaited by the client, never raised."""
        started = time.perf_counter()
        try:
            result = await self._call(model, shadow, request.inputs)
        except RayfleetError as error:
            self.shadow_failures += 1
            status = http_status(error)
            self._record(
                model,
                shadow,
                started,
                status,
                request,
                None,
                pair_id,
                shadow_of=primary,
            )
            if request_id is not None:
                self._log(
                    request_id,
                    model,
                    shadow,
                    started,
                    status,
                    request,
                    shadow_of=primary,
                )
            return
        except Exception:  # a shadow must never surface an error
            self.shadow_failures += 1
            logger.exception("shadow call to %s/%s failed", model, shadow)
            return
        self._record(
            model,
            shadow,
            started,
            200,
            request,
            result,
            pair_id,
            shadow_of=primary,
        )
        if request_id is not None:
            self._log(
                request_id,
                model,
                shadow,
                started,
                200,
                request,
                result,
                shadow_of=primary,
            )

    def _log(
        self,
        request_id: str,
        model: str,
        version: str,
        started: float,
        status: int,
        request: InferRequest,
        result: ReplicaResult | None = None,
        *,
        shadow_of: str | None = None,
    ) -> None:
        """Hand a request that ran (or failed after its check) to the request log."""
        if self.request_log is None:
            return
        try:
            self.request_log.record(
                request_id,
                model,
                version,
                status,
                (time.perf_counter() - started) * 1000,
                result.model_ms if result is not None else 0.0,
                request.inputs,
                result.outputs if result is not None else None,
                shadow_of,
            )
        except Exception:  # the log must never fail a request already answered
            logger.exception("logging a request to %s/%s failed", model, version)

    def _record(
        self,
        model: str,
        version: str,
        started: float,
        status: int,
        request: InferRequest,
        result: ReplicaResult | None = None,
        request_id: str | None = None,
        *,
        shadow_of: str | None = None,
    ) -> None:
        if self.recorder is None:
            return
        sample = self.spec.observations.sample_rate
        features = None
        prediction = confidence = None
        try:
            if status < 400 and (sample >= 1 or self.rand() < sample):
                features = summarize_inputs(request.inputs)
            if result is not None:
                prediction, confidence = summarize_outputs(result.outputs)
        except Exception:  # a summary must never fail a request already answered
            logger.exception("summarizing a request to %s/%s failed", model, version)
        self.recorder.record(
            Observation(
                model=model,
                version=version,
                ts=time.time(),
                latency_ms=(time.perf_counter() - started) * 1000,
                model_ms=result.model_ms if result is not None else 0.0,
                status=status,
                features=features,
                prediction=prediction,
                confidence=confidence,
                shadow_of=shadow_of,
                request_id=request_id,
            )
        )

    def server_metadata(self) -> dict[str, Any]:
        """``GET /v2``: the server's name, version and protocol extensions."""
        return {
            "name": SERVER_NAME,
            "version": SERVER_VERSION,
            "extensions": ["binary_tensor_data", "model_repository_versions"],
        }

    def model_metadata(self, model: str, version: str | None = None) -> dict[str, Any]:
        """``GET /v2/models/{model}[/versions/{v}]``: versions and signature.

        Without a version, the signature is the stable version's (the one with the
        most traffic), since that is what an unpinned request most likely meets.
        """
        plan = self.plan(model)
        chosen = plan.choose(pin=version) if version else _heaviest(plan)
        manifest = self.manifests[model][chosen]

        def tensors(specs: Any) -> list[dict[str, Any]]:
            return [
                {"name": s.name, "datatype": s.datatype, "shape": list(s.shape)}
                for s in specs
            ]

        metadata: dict[str, Any] = {
            "name": model,
            "versions": list(plan.weights),
            "platform": f"{manifest.runtime}",
            "inputs": tensors(manifest.signature.inputs),
            "outputs": tensors(manifest.signature.outputs),
        }
        if version:
            metadata["versions"] = [chosen]
        return metadata

    async def model_ready(self, model: str, version: str | None = None) -> bool:
        """Whether the version (or, without one, every version with traffic) is
        ready to serve."""
        plan = self.plan(model)
        if version:
            return await self.backend.ready(model, plan.choose(pin=version))
        live = [name for name, weight in plan.weights.items() if weight > 0]
        states = await asyncio.gather(*(self.backend.ready(model, v) for v in live))
        return all(states)

    async def server_ready(self) -> bool:
        """Whether every model is ready."""
        states = await asyncio.gather(*(self.model_ready(m) for m in self.plans))
        return all(states)


def _rows(inputs: Mapping[str, np.ndarray]) -> int:
    """The request's rows: the first input's first dimension (1 for a scalar)."""
    first = next(iter(inputs.values()), None)
    if first is None:
        return 0
    return int(first.shape[0]) if first.ndim else 1


def _heaviest(plan: TrafficPlan) -> str:
    return max(plan.weights, key=lambda name: plan.weights[name])


def _layout(weights: Mapping[str, float], model: ModelSpec) -> dict[str, float]:
    """Canaries first, so sticky keys on a canary stay there as it grows."""
    canaries = [v.name for v in model.versions if v.canary]
    rest = [v.name for v in model.versions if not v.canary]
    return {name: weights.get(name, 0.0) for name in (*canaries, *rest)}


def initial_plans(spec: PlatformSpec) -> dict[str, TrafficPlan]:
    """The traffic plans of a freshly deployed spec, from its declared weights.

    A model under a rollout starts with its canaries at 0 until the Validator's
    controller sets their weights.
    """
    plans = {}
    for model in spec.models:
        weights = model.initial_weights()
        if model.rollout is not None:
            weights = {
                v.name: 0.0 if v.canary else weights[v.name] for v in model.versions
            }
        plans[model.name] = TrafficPlan(model.name, _layout(weights, model))
    return plans
