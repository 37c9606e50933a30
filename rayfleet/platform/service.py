"""The data plane, free of Ray and HTTP: look up, choose a version, check, infer.

The router's HTTP handlers only decode a wire format into an
:class:`~rayfleet.platform.protocol.InferRequest`, call :meth:`InferenceService.infer`
and encode what comes back. The replicas are reached through a :class:`Backend`, so
route tests can run against an in-memory one and integration tests against Serve.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from rayfleet.platform.errors import DeadlineExceeded, ModelNotFound
from rayfleet.platform.protocol.types import InferRequest, InferResponse
from rayfleet.platform.signature import check_inputs
from rayfleet.platform.spec import PlatformSpec
from rayfleet.platform.store import Manifest
from rayfleet.platform.traffic import TrafficPlan

__all__ = ["Backend", "InferenceService", "Outcome", "ReplicaResult"]

SERVER_NAME = "rayfleet"
SERVER_VERSION = "0.1.0"


@dataclass(frozen=True)
class ReplicaResult:
    """What a replica returns for one request."""

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
    ) -> None:
        self.spec = spec
        self.manifests = manifests
        self.backend = backend
        self.plans = {
            model.name: TrafficPlan(model.name, _layout(model.initial_weights(), model))
            for model in spec.models
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
    ) -> Outcome:
        """Check ``request`` against the chosen version's signature and run it.

        Raises the typed errors of :mod:`rayfleet.platform.errors`: 404 for an
        unknown model or version, 400 for inputs that do not fit, 504 past the
        router's deadline; the backend raises 500 and 503 errors.
        """
        started = time.perf_counter()
        version = self.plan(model).choose(pin=pin, sticky_key=sticky_key)
        manifest = self.manifests[model][version]
        check_inputs(manifest.signature, request.inputs, request.datatypes)
        timeout = self.spec.router.request_timeout_s
        try:
            result = await asyncio.wait_for(
                self.backend.infer(model, version, request.inputs), timeout
            )
        except asyncio.TimeoutError:
            raise DeadlineExceeded(
                f"{model}/{version} did not answer within {timeout:g} s"
            ) from None
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


def _heaviest(plan: TrafficPlan) -> str:
    return max(plan.weights, key=lambda name: plan.weights[name])


def _layout(weights: dict[str, float], model: Any) -> dict[str, float]:
    """Canaries first, so sticky keys on a canary stay there as it grows."""
    canaries = [v.name for v in model.versions if v.canary]
    rest = [v.name for v in model.versions if not v.canary]
    return {name: weights[name] for name in (*canaries, *rest)}
