"""PoolReplica: one replica of a pool, serving many versions loaded on demand.

The router calls a pooled version through the pool's handle with the version as
Serve's multiplexed model id (:func:`rayfleet.deployments.health.pooled_version_id`).
Serve's request router then prefers replicas that hold the version, falling back
to the replicas holding the fewest versions, and to any replica after about a
second. Which versions a replica holds, and when it loads and unloads them, is
rayfleet's :class:`~rayfleet.platform.serving.pool.VersionPool`, bounded by count
and by bytes, with one load per version however many requests wait for it and
unloading of idle versions; this replica tells Serve's controller what it holds
whenever that changes, as ``@serve.multiplexed`` does for its own cache.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import ray
from ray import serve
from ray.serve._private.common import RequestRoutingInfo
from ray.serve.context import _get_global_client
from ray.serve.handle import DeploymentHandle

from rayfleet.deployments.health import pool_deployment_name
from rayfleet.deployments.reporting import report_forever
from rayfleet.deployments.serve_logs import send_to_serve
from rayfleet.platform.background import BackgroundTasks
from rayfleet.platform.config.spec import PoolSpec, TracingSpec, VersionSpec
from rayfleet.platform.config.store import Manifest, ModelStore
from rayfleet.platform.constants import (
    POOL_IDLE_CHECK_S,
    POOL_ROUTING_PUSH_S,
    POOL_ROUTING_REFRESH_S,
    POOL_ROUTING_WARN_EVERY_S,
)
from rayfleet.platform.errors import RayfleetError, ServiceUnavailable
from rayfleet.platform.runtimes.device import Device
from rayfleet.platform.serving.counters import (
    PoolReport,
    ReplicaCounters,
    ReplicaReport,
)
from rayfleet.platform.serving.loading import LoadedVersion, load_version
from rayfleet.platform.serving.pool import PoolLimits, VersionPool
from rayfleet.platform.serving.runner import VersionRunner
from rayfleet.platform.serving.service import ReplicaResult
from rayfleet.platform.serving.stacking import Inputs
from rayfleet.platform.tracing import tracing_for

__all__ = ["PoolReplica", "PooledVersion"]

logger = logging.getLogger("ray.serve")


@dataclass(frozen=True)
class PooledVersion:
    """What a pool replica needs to load one of its versions, sent by the app
    builder as plain data: the version's spec, its manifest, and the bytes it
    counts for against the pool's ``max_loaded_bytes``."""

    model: str
    spec: VersionSpec
    manifest: Manifest
    size_bytes: int

    def to_dict(self) -> dict[str, Any]:
        """A plain-data copy, to cross into the replica's process."""
        return {
            "model": self.model,
            "spec": self.spec.model_dump(mode="json"),
            "manifest": self.manifest.model_dump(mode="json"),
            "size_bytes": self.size_bytes,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PooledVersion:
        """The version :meth:`to_dict` wrote."""
        return cls(
            str(data["model"]),
            VersionSpec.model_validate(data["spec"]),
            Manifest.model_validate(data["manifest"]),
            int(data["size_bytes"]),
        )


@dataclass
class _Loaded:
    runner: VersionRunner
    files: LoadedVersion


@serve.deployment
class PoolReplica:
    """Serves every version placed in one pool, loading each on its first
    request here: that request waits for the load (and warm-up), later ones find
    it warm. Canaries are the exception: each is loaded before the replica is
    up (:meth:`_warm_canaries`)."""

    # Serve awaits an async constructor (replica.py, initialize_callable) and
    # reports the replica up only after it: the canaries' loads happen here.
    async def __init__(  # type: ignore[misc]
        self,
        pool: dict[str, Any],
        versions: dict[str, dict[str, Any]],
        store_uri: str,
        validator: DeploymentHandle[Any] | None,
        report_every_s: float,
        tracing: dict[str, Any] | None = None,
    ) -> None:
        send_to_serve()
        self.spec = PoolSpec.model_validate(pool)
        self.background = BackgroundTasks(pool_deployment_name(self.spec.name))
        self.tracing = tracing_for(TracingSpec.model_validate(tracing or {}))
        self.store = ModelStore(store_uri)
        self.versions = {
            key: PooledVersion.from_dict(data) for key, data in versions.items()
        }
        # Kept across loads, so a version's totals survive its unloading.
        self.counters = {key: ReplicaCounters() for key in self.versions}
        self.devices: dict[str, Device] = {}
        # Loads (fetch, session, warm-up) and the deletion of unloaded copies
        # run one at a time on a thread of their own: on Serve's default
        # executor, a few cold versions would take every thread the warm
        # versions' model calls run on.
        self._loader = ThreadPoolExecutor(1, thread_name_prefix="pool-load")
        self._stopping = False
        self.cache: VersionPool[_Loaded] = VersionPool(
            PoolLimits(
                self.spec.max_loaded_versions,
                self.spec.max_loaded_bytes,
                self.spec.unload_after_s,
            ),
            self._load,
            lambda key: self.versions[key].size_bytes,
            self._unload,
            on_change=self._holdings_changed,
        )
        context = serve.get_replica_context()
        self.replica_id = context.replica_id
        self._push_holdings = True
        self.background.start("routing info", self._publish_forever)
        if self.spec.unload_after_s is not None:
            self.background.start("idle unloading", self._unload_idle_forever)
        if validator is not None:
            self._start_reports(validator, report_every_s)
        await self._warm_canaries()
        logger.info(
            "pool %s: up, serving %d versions on demand (at most %d loaded)",
            self.spec.name,
            len(self.versions),
            self.spec.max_loaded_versions,
        )

    async def _warm_canaries(self) -> None:
        """Load the pool's canaries, in the spec's order and as many as the pool
        holds, before this replica reports ready.

        A canary's rollout is judged on its latency, and starts only once its
        pool's deployment is healthy: loaded here, its first requests do not
        carry its load into the end-to-end gate. A canary that fails to load
        does not stop the replica; its requests meet the load's failure (and
        its retry) as on any other replica."""
        canaries = [key for key, v in self.versions.items() if v.spec.canary]
        for key in canaries[: self.spec.max_loaded_versions]:
            try:
                async with self.cache.use(key):
                    pass
            except RayfleetError as error:
                logger.warning(
                    "pool %s: canary %s not loaded ahead of its traffic: %s",
                    self.spec.name,
                    key,
                    error.message,
                )

    async def infer(
        self, inputs: Inputs, trace: dict[str, str] | None = None
    ) -> ReplicaResult:
        """Run one request on the version the handle named (Serve's multiplexed
        model id), loading it first when this replica does not hold it."""
        key = serve.get_multiplexed_model_id()
        if key not in self.versions:
            # Only while a new config rolls out: a router that knows the
            # version reached a replica that does not yet.
            raise ServiceUnavailable(
                f"pool {self.spec.name!r} does not serve {key!r} here yet"
            )
        async with self.cache.use(key) as loaded:
            return await loaded.runner.infer(inputs, trace)

    async def _load(self, key: str) -> _Loaded:
        version = self.versions[key]
        # The pool's GPUs are the version's: an onnx version asks for CUDA then.
        spec = version.spec.model_copy(update={"num_gpus": self.spec.num_gpus})
        try:
            files = await asyncio.get_running_loop().run_in_executor(
                self._loader,
                functools.partial(
                    load_version, self.store, version.model, spec, version.manifest
                ),
            )
        except Exception as error:  # a model's own loader may raise anything
            reason = error.message if isinstance(error, RayfleetError) else repr(error)
            logger.warning(
                "pool %s: loading %s failed: %s", self.spec.name, key, reason
            )
            # The store or the model's files failed, not the request: another
            # try (this replica's next request, or another replica) may load it.
            raise ServiceUnavailable(f"{key} could not be loaded: {reason}") from None
        self.devices[key] = files.runtime.device
        logger.info(
            "pool %s: %s loaded and warm in %.2f s", self.spec.name, key, files.warm_s
        )
        runner = VersionRunner(
            version.model,
            version.spec.name,
            files.runtime,
            version.manifest.signature,
            version.spec.batching,
            placement="pool",
            tracing=self.tracing,
            counters=self.counters[key],
        )
        return _Loaded(runner, files)

    def _unload(self, loaded: _Loaded) -> None:
        loaded.runner.close()
        if self._stopping:
            # From __del__, which the garbage collector may run inside another
            # executor's submit, holding the lock every submit takes: deleting
            # here cannot deadlock, submitting could.
            loaded.files.discard_files()
        else:
            self._loader.submit(loaded.files.discard_files)

    def _holdings_changed(self) -> None:
        self._push_holdings = True

    async def _publish_forever(self) -> None:
        # Serve's request router learns which replica holds which version from
        # its controller, told here (as @serve.multiplexed tells it of its own
        # cache), loading versions included, so that requests for a version
        # follow its first one to the replica loading it. The controller keeps
        # this in memory only: the set is sent again every so often, so that a
        # restarted controller routes by holder again.
        client = None
        since = 0.0
        warned_at = -POOL_ROUTING_WARN_EVERY_S
        while True:
            await asyncio.sleep(POOL_ROUTING_PUSH_S)
            since += POOL_ROUTING_PUSH_S
            if not self._push_holdings and since < POOL_ROUTING_REFRESH_S:
                continue
            try:
                if client is None:
                    # May block on Ray, once: finding the controller.
                    client = await asyncio.to_thread(_get_global_client)
                if client is not None:
                    # A remote call: it returns at once.
                    client.record_request_routing_info(
                        RequestRoutingInfo(
                            replica_id=self.replica_id,
                            multiplexed_model_ids=self.cache.keys(),
                        )
                    )
                    self._push_holdings, since = False, 0.0
            except Exception as error:  # routing falls back meanwhile; retry
                # Tried again every POOL_ROUTING_PUSH_S: one line a minute is
                # enough to say the controller is still out of reach.
                now = time.monotonic()
                if now - warned_at >= POOL_ROUTING_WARN_EVERY_S:
                    warned_at = now
                    logger.warning(
                        "pool %s: Serve's controller not told what this replica "
                        "holds (retrying every %g s): %r",
                        self.spec.name,
                        POOL_ROUTING_PUSH_S,
                        error,
                    )

    async def _unload_idle_forever(self) -> None:
        assert self.spec.unload_after_s is not None
        every = min(POOL_IDLE_CHECK_S, self.spec.unload_after_s / 4)
        while True:
            await asyncio.sleep(every)
            unloaded = self.cache.unload_idle()
            if unloaded:
                logger.info(
                    "pool %s: unloaded %s, idle for %g s",
                    self.spec.name,
                    ", ".join(unloaded),
                    self.spec.unload_after_s,
                )

    def _start_reports(self, validator: DeploymentHandle[Any], every_s: float) -> None:
        replica = self.replica_id.unique_id
        node_id = ray.get_runtime_context().get_node_id()

        # Every version of the pool, loaded here or not: this replica can serve
        # each (RayfleetNoHealthyReplica reads these series). Its device is
        # known once it has loaded here; until then it says nothing of one,
        # as a replica too old to say would.
        unknown = Device(provider="", gpu_requested=self.spec.num_gpus > 0)

        def versions() -> list[ReplicaReport]:
            return [
                self.counters[key].report(
                    self.versions[key].model,
                    self.versions[key].spec.name,
                    replica,
                    device=self.devices.get(key, unknown),
                    node_id=node_id,
                )
                for key in sorted(self.versions)
            ]

        def pool() -> list[PoolReport]:
            stats = self.cache.stats()
            return [
                PoolReport(
                    pool=self.spec.name,
                    replica=replica,
                    node_id=node_id,
                    loaded=tuple(
                        (self.versions[key].model, self.versions[key].spec.name)
                        for key in stats.loaded
                    ),
                    loaded_bytes=stats.loaded_bytes,
                    loads=stats.loads,
                    load_failures=stats.load_failures,
                    load_seconds=stats.load_seconds,
                    unloads=dict(stats.unloads),
                    load_waits=stats.load_waits,
                )
            ]

        self.background.start(
            "replica reports", lambda: report_forever(validator, versions, every_s)
        )
        self.background.start(
            "pool reports",
            lambda: report_forever(validator, pool, every_s, method="pool_report"),
        )

    def __del__(self) -> None:
        # Serve calls this on graceful shutdown: the loops stop, the versions'
        # copies of a remote store's files go, and the spans still held leave.
        self._stopping = True
        self.background.cancel()
        loader = getattr(self, "_loader", None)
        if loader is not None:
            loader.shutdown(wait=False)
        cache = getattr(self, "cache", None)
        if cache is not None:
            cache.close()
        tracing = getattr(self, "tracing", None)
        if tracing is not None:
            tracing.close()
