"""The typed rayfleet spec: the ``args`` of a Serve config, validated at deploy time.

A Serve config names ``rayfleet.deployments.app:build`` as its ``import_path`` and
puts a :class:`PlatformSpec` under ``args``. Validation happens when the application
is built, so a typo fails ``serve deploy`` with the field path, never a request::

    store: ./build/models
    router: {max_body_bytes: 67108864, request_timeout_s: 30}
    models:
      - name: digits
        versions:
          - name: v1
          - name: v2
            weight: 10
            canary: true

Unknown keys are errors everywhere.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any, ClassVar, Literal

from pydantic import (
    Field,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    ValidationError,
    field_validator,
    model_validator,
)

from rayfleet.platform.config.base import Spec
from rayfleet.platform.config.rollout import RolloutSpec
from rayfleet.platform.config.tracing import TracingSpec
from rayfleet.platform.config.webhook import WebhookSpec
from rayfleet.platform.errors import ConfigError

__all__ = [
    "DEFAULT_STABLE_WINDOW_S",
    "AutoscalingSpec",
    "BatchingSpec",
    "ModelSpec",
    "ObservationSpec",
    "PlatformSpec",
    "PoolSpec",
    "RequestLogSpec",
    "RouterSpec",
    "TracingSpec",
    "TritonTarget",
    "VersionSpec",
    "parse_spec",
]

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
Runtime = Literal["onnx", "python", "triton"]
Placement = Literal["replica", "router", "pool"]
Transport = Literal["handle", "direct"]
# Ray node labels a deployment's replicas must match, passed to Serve as the
# actor option of the same name; Ray checks the syntax when the app is built.
LabelSelector = dict[str, str]


def _check_name(value: str) -> str:
    if not _NAME.match(value):
        raise ValueError(
            f"{value!r} is not a valid name: use letters, digits, '_', '.', '-' "
            "(at most 63, starting with a letter or digit), e.g. 'digits' or 'v2'"
        )
    return value


def _replica_max_ongoing(explicit: int | None, target: float) -> int:
    # Well above the autoscaling target unless set, so that requests past it wait
    # in the replica for the model or the next batch: past this limit they wait
    # in Serve's router, which retries full replicas with backoff of up to 0.5 s
    # and, on one replica, served 8 images/s where the replica's own queue served
    # 230 (loadtest/RESULTS.md, "Overload").
    if explicit is not None:
        return explicit
    return max(8 * math.ceil(target), 64)


class BatchingSpec(Spec):
    """Dynamic batching of a version, in its replicas or in the router:
    ``max_batch_size: 1`` turns it off."""

    max_batch_size: PositiveInt = 16
    # How long a request at an idle model waits for company; only a request that
    # followed another within this long waits at all (the batcher says why).
    batch_wait_timeout_s: NonNegativeFloat = 0.002


DEFAULT_STABLE_WINDOW_S = 60.0


class AutoscalingSpec(Spec):
    """Replica bounds and the in-flight requests each replica should carry.

    ``target_ongoing_requests`` defaults to the version's ``max_batch_size``, so a
    replica at target has about one full batch in flight. ``policy`` picks who
    decides: ``rayfleet``, the request-count policy of :mod:`rayfleet.autoscaling`
    (stable and panic windows in wall-clock seconds, hysteresis, bounded rates),
    or ``serve``, Serve's default policy with its default delays.
    ``min_replicas: 0`` scales to zero after a grace period without traffic.

    ``stable_window_s``, ``panic_window_s`` and ``scale_down_delay_s`` tune the
    ``rayfleet`` policy (defaults 60, 6 and 30 s, after Knative's KPA; see
    :mod:`rayfleet.autoscaling.policy`); Serve's policy has its own knobs.
    """

    policy: Literal["rayfleet", "serve"] = "rayfleet"
    min_replicas: NonNegativeInt = 1
    initial_replicas: NonNegativeInt | None = None
    max_replicas: PositiveInt = 1
    target_ongoing_requests: PositiveFloat | None = None
    stable_window_s: PositiveFloat | None = None
    panic_window_s: PositiveFloat | None = None
    scale_down_delay_s: NonNegativeFloat | None = None

    @model_validator(mode="after")
    def _bounds(self) -> AutoscalingSpec:
        if self.min_replicas > self.max_replicas:
            raise ValueError(
                f"min_replicas ({self.min_replicas}) must not exceed max_replicas "
                f"({self.max_replicas})"
            )
        initial = self.initial_replicas
        if initial is not None and not (
            self.min_replicas <= initial <= self.max_replicas
        ):
            raise ValueError(
                f"initial_replicas ({initial}) must lie between min_replicas "
                f"({self.min_replicas}) and max_replicas ({self.max_replicas})"
            )
        # The policy's default stable window (a unit test keeps them equal).
        stable = self.stable_window_s or DEFAULT_STABLE_WINDOW_S
        panic = self.panic_window_s
        if panic is not None and panic > stable:
            raise ValueError(
                f"panic_window_s ({panic:g}) must not exceed stable_window_s "
                f"({stable:g}), e.g. 6 and 60"
            )
        if self.policy == "serve" and self.windows():
            raise ValueError(
                f"{', '.join(self.windows())} tune the rayfleet policy only; "
                "drop them or use policy: rayfleet"
            )
        return self

    def windows(self) -> dict[str, float]:
        """The ``rayfleet`` policy's windows and delays that this spec sets."""
        return {
            name: value
            for name in ("stable_window_s", "panic_window_s", "scale_down_delay_s")
            if (value := getattr(self, name)) is not None
        }


class TritonTarget(Spec):
    """A model on a remote KServe v2 / Triton server, reached with tritonclient."""

    url: str = Field(description="host:port of the server's HTTP endpoint")
    model_name: str
    model_version: str = ""
    timeout_s: PositiveFloat = 30.0


class VersionSpec(Spec):
    """One version of a model.

    Its files live at ``{store}/{model}/{name}/`` unless ``uri`` says otherwise.
    ``runtime`` overrides the manifest's. ``weight`` is its percent of unpinned
    traffic; versions without a weight share what the others leave.

    ``placement`` says where it runs. ``replica`` (the default): its own Serve
    deployment, autoscaled on its own requests in flight and batched there, one
    Ray hop from the router. ``router``: loaded inside every router replica and
    run there with no hop, scaling with the router; for small CPU models whose
    inference costs less than a hop (about 3-7 ms here, see DESIGN.md), where the
    hop, not the model, would decide latency and throughput. ``pool``: loaded on
    demand into a replica of the pool that ``pool`` names (see :class:`PoolSpec`),
    shared with other versions; for many small or rarely used versions
    (per-customer fine-tunes, canaries at a few percent), where a replica of its
    own would mostly idle. The pool's resources, scaling and limits apply, so a
    version in a pool sets none of ``num_cpus``, ``num_gpus``, ``autoscaling``,
    ``max_ongoing_requests``, ``max_queued_requests``, ``label_selector`` and
    ``require_gpu``; its ``batching`` stays its own, since each loaded version
    batches on its own. A triton version cannot be in a pool: it loads nothing in
    rayfleet.

    ``label_selector`` restricts its replicas to Ray nodes with those labels
    (e.g. ``{ray.io/accelerator-type: A10G}``); ``num_gpus`` alone already keeps
    them on nodes with GPUs.

    ``num_gpus > 0`` asks for a GPU: an onnx version then runs on CUDA when its
    onnxruntime session can, and otherwise on CPU, with one warning in the
    replica's log saying why. ``require_gpu: true`` makes that a failure instead:
    the replica does not start, and Serve shows the reason. It needs
    ``num_gpus > 0`` and is for onnx versions only (python and triton versions
    pick their device themselves, out of rayfleet's sight). ``/metrics`` shows
    what each replica runs on (``rayfleet_replica_info``).

    ``transport`` says how a router reaches a version in its own replicas.
    ``handle`` (the default): Serve's deployment handle, a Ray actor call.
    ``direct``: a TCP connection the replica opens and announces through Serve,
    so the tensors skip the actor call and its bookkeeping; Serve still places,
    scales and health-checks the replicas, and the router falls back to the handle
    while it knows no replica (a version scaled to zero starts as before). It
    needs ``placement: replica`` and the ``rayfleet`` autoscaling policy, which
    counts the calls each replica reports running over its channel.
    """

    name: str
    uri: str | None = None
    runtime: Runtime | None = None
    triton: TritonTarget | None = None
    placement: Placement = "replica"
    transport: Transport = "handle"
    pool: str | None = None
    num_cpus: NonNegativeFloat = 1.0
    num_gpus: NonNegativeFloat = 0.0
    batching: BatchingSpec = BatchingSpec()
    autoscaling: AutoscalingSpec = AutoscalingSpec()
    max_ongoing_requests: PositiveInt | None = None
    max_queued_requests: int = Field(default=-1, ge=-1)
    label_selector: LabelSelector | None = None
    weight: float | None = Field(default=None, ge=0, le=100)
    canary: bool = False
    require_gpu: bool = False

    _name = field_validator("name")(_check_name)

    @model_validator(mode="after")
    def _consistent(self) -> VersionSpec:
        if (self.runtime == "triton") != (self.triton is not None):
            raise ValueError(
                "runtime 'triton' and a 'triton' block go together, e.g. "
                "{runtime: triton, triton: {url: '127.0.0.1:8001', model_name: m}}"
            )
        self._check_pool()
        if self.placement == "router" and self.num_gpus > 0:
            raise ValueError(
                "a version placed in the router cannot ask for GPUs: router "
                "replicas are CPU processes; use placement: replica"
            )
        if self.require_gpu:
            self._check_require_gpu()
        if self.transport == "direct":
            self._check_direct()
        return self

    def _check_direct(self) -> None:
        if self.placement != "replica":
            raise ValueError(
                f"transport: direct is for versions in their own replicas; a "
                f"version with placement: {self.placement} has no replica of its "
                "own to connect to"
            )
        if self.autoscaling.policy != "rayfleet":
            raise ValueError(
                "transport: direct needs autoscaling.policy: rayfleet: Serve's "
                "own policy would not see the requests that skip its handle"
            )

    def _check_pool(self) -> None:
        if self.placement == "pool" and self.pool is None:
            raise ValueError(
                "placement: pool needs the pool's name, one declared under "
                "pools, e.g. {placement: pool, pool: small}"
            )
        if self.pool is None:
            return
        if self.placement != "pool":
            raise ValueError(
                f"pool {self.pool!r} needs placement: pool, e.g. "
                f"{{placement: pool, pool: {self.pool}}}"
            )
        if self.triton is not None:
            raise ValueError(
                "a triton version cannot be in a pool: it runs on its server and "
                "loads nothing in rayfleet; use placement: replica"
            )
        # Given and not the default: a spec dumped in full, as the app hands it to
        # the router and the Validator, lists every field and must parse again.
        given = [
            field
            for field in _POOL_OWNED
            if field in self.model_fields_set
            and getattr(self, field) != type(self).model_fields[field].default
        ]
        if given:
            on_pool = ", ".join(f"pools[].{field}" for field in given)
            belong = "belong" if len(given) > 1 else "belongs"
            raise ValueError(
                f"a version in a pool takes its resources, scaling and limits "
                f"from the pool: {', '.join(given)} {belong} on the pool "
                f"({on_pool}), not on the version"
            )

    def _check_require_gpu(self) -> None:
        if self.placement == "router":
            raise ValueError(
                "require_gpu needs a version in its own replicas: router replicas "
                "are CPU processes; use placement: replica with num_gpus > 0"
            )
        if self.num_gpus == 0:
            raise ValueError(
                "require_gpu needs num_gpus > 0: without a GPU reserved the "
                "version could only fail; e.g. num_gpus: 1 (or 0.25 to share one)"
            )
        if self.runtime in ("python", "triton"):
            raise ValueError(
                f"require_gpu is for onnx versions: a {self.runtime} version "
                "picks its device itself, where rayfleet cannot check it; drop "
                "require_gpu (num_gpus still reserves the GPU)"
            )

    @property
    def target_ongoing_requests(self) -> float:
        """The in-flight requests per replica the autoscaler aims for."""
        target = self.autoscaling.target_ongoing_requests
        return float(target if target is not None else self.batching.max_batch_size)

    @property
    def replica_max_ongoing_requests(self) -> int:
        """How many requests a replica takes at once; the router queues the rest.

        ``max_ongoing_requests``, or eight times the autoscaling target and at
        least 64.
        """
        return _replica_max_ongoing(
            self.max_ongoing_requests, self.target_ongoing_requests
        )


# What a version in a pool takes from its pool: the replica's resources, scaling
# and limits, shared by every version the replica holds.
_POOL_OWNED = (
    "num_cpus",
    "num_gpus",
    "autoscaling",
    "max_ongoing_requests",
    "max_queued_requests",
    "label_selector",
    "require_gpu",
)

# A pool's autoscaling target unless set: a pool has no batch size of its own,
# and each version it holds batches up to 16 by default (BatchingSpec), so a
# replica at target has about one default batch in flight, as a version's has.
_POOL_TARGET_ONGOING = 16.0


class PoolSpec(Spec):
    """A Serve deployment whose replicas serve many versions, each loaded on demand.

    A version with ``placement: pool`` and ``pool: NAME`` runs in pool NAME. A
    replica loads a version on its first request for it (from the store, warm-up
    included) and keeps the most recently used; the router prefers, for a
    version's requests, a replica that already holds it.

    ``num_cpus``, ``num_gpus``, ``autoscaling``, ``max_ongoing_requests``,
    ``max_queued_requests`` and ``label_selector`` mean what they mean on a
    version in its own replicas, for the pool's replicas and every version they
    hold; ``autoscaling.target_ongoing_requests`` defaults to 16, one default
    batch (a pool has no batch size of its own).

    ``max_loaded_versions`` (default 8) and ``max_loaded_bytes`` (default none:
    the count alone bounds memory, enough where versions are of similar size)
    bound what one replica holds, a version counting the bytes of its files in
    the store, manifest and reference aside (the app refuses a version bigger
    than the pool); a load that would pass either first unloads the least
    recently used versions.
    ``unload_after_s`` (default 600) unloads a version idle that long, so that
    one used a few times an hour stays loaded and one abandoned gives its
    memory back; ``None`` unloads only to make room.
    """

    name: str
    num_cpus: NonNegativeFloat = 1.0
    num_gpus: NonNegativeFloat = 0.0
    autoscaling: AutoscalingSpec = AutoscalingSpec()
    max_ongoing_requests: PositiveInt | None = None
    max_queued_requests: int = Field(default=-1, ge=-1)
    label_selector: LabelSelector | None = None
    max_loaded_versions: PositiveInt = 8
    max_loaded_bytes: PositiveInt | None = None
    unload_after_s: PositiveFloat | None = 600.0

    _name = field_validator("name")(_check_name)

    @property
    def target_ongoing_requests(self) -> float:
        """The in-flight requests per replica the autoscaler aims for."""
        target = self.autoscaling.target_ongoing_requests
        return float(target if target is not None else _POOL_TARGET_ONGOING)

    @property
    def replica_max_ongoing_requests(self) -> int:
        """How many requests a replica takes at once; the router queues the rest.

        The same rule as :attr:`VersionSpec.replica_max_ongoing_requests`.
        """
        return _replica_max_ongoing(
            self.max_ongoing_requests, self.target_ongoing_requests
        )


class ModelSpec(Spec):
    """A named model and the versions of it that are served.

    With ``rollout`` set, each version marked ``canary: true`` goes through a
    progressive rollout against the stable version (the non-canary version with
    the most traffic), one canary at a time in the order declared; without it,
    the declared weights stay as they are.
    """

    name: str
    versions: tuple[VersionSpec, ...] = Field(min_length=1)
    rollout: RolloutSpec | None = None

    _name = field_validator("name")(_check_name)

    @model_validator(mode="after")
    def _versions(self) -> ModelSpec:
        names = [version.name for version in self.versions]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"version names must be unique; repeated: {duplicates}")
        self.initial_weights()
        if self.rollout is not None and not any(not v.canary for v in self.versions):
            raise ValueError("a rollout needs a stable version: one without canary")
        return self

    @property
    def stable_version(self) -> str:
        """The non-canary version with the most declared traffic."""
        weights = self.initial_weights()
        stable = [v.name for v in self.versions if not v.canary]
        return max(stable, key=lambda name: weights[name])

    def version(self, name: str) -> VersionSpec:
        """The version called ``name``."""
        for version in self.versions:
            if version.name == name:
                return version
        raise KeyError(name)

    def initial_weights(self) -> dict[str, float]:
        """Percent of unpinned traffic per version, from the declared weights.

        Versions without a weight share what is left of 100 equally; canaries
        without a weight start at 0.
        """
        declared = sum(v.weight for v in self.versions if v.weight is not None)
        if declared > 100 + 1e-9:
            raise ValueError(f"version weights add up to {declared:g}, over 100")
        sharing = [v for v in self.versions if v.weight is None and not v.canary]
        share = (100 - declared) / len(sharing) if sharing else 0.0
        weights = {}
        for version in self.versions:
            if version.weight is not None:
                weights[version.name] = version.weight
            else:
                weights[version.name] = 0.0 if version.canary else share
        if sum(weights.values()) <= 0:
            raise ValueError(
                "no version gets traffic: give at least one version a weight > 0"
            )
        return weights


# How many times max_body_bytes a request may decode to, unless set.
_DECODED_PER_BODY = 4


class RouterSpec(Spec):
    """Limits and size of the router, the HTTP ingress.

    The router autoscales on its own requests in flight; versions placed in the
    router scale with it.
    """

    max_body_bytes: PositiveInt = 64 * 1024 * 1024
    # What a request may decode to. The body limit alone does not bound memory:
    # compressed Arrow expands a thousandfold, and a JSON number of two bytes
    # ("1,") becomes an 8-byte element. Unset, it is _DECODED_PER_BODY times
    # max_body_bytes: that takes any uncompressed body the router accepts (JSON
    # at its densest included) and still stops a small stream that expands.
    max_decoded_bytes: PositiveInt = _DECODED_PER_BODY * 64 * 1024 * 1024
    request_timeout_s: PositiveFloat = 30.0
    num_cpus: NonNegativeFloat = 0.5
    autoscaling: AutoscalingSpec = AutoscalingSpec(target_ongoing_requests=64)
    max_ongoing_requests: PositiveInt = 512
    # Serve spreads replicas over every node with room, GPU nodes included; a
    # selector such as {rayfleet.io/role: head} keeps routers on the head.
    label_selector: LabelSelector | None = None
    sticky_header: str | None = Field(
        default="x-session-id",
        description="requests with the same value of this header meet one version",
    )

    @model_validator(mode="before")
    @classmethod
    def _decoded_follows_body(cls, data: Any) -> Any:
        if isinstance(data, Mapping) and "max_decoded_bytes" not in data:
            body = data.get("max_body_bytes")
            if type(body) is int and body > 0:
                return {**data, "max_decoded_bytes": _DECODED_PER_BODY * body}
        return data


class ObservationSpec(Spec):
    """How requests are observed, and the Validator that keeps what they show.

    Routers summarize each request (version, latency, status, prediction; input
    features for ``sample_rate`` of them), add it to per-version statistics and
    send those, summed up, to the Validator every ``flush_every_s``. The rows of
    shadow pairs, which the Validator matches one by one, wait in a buffer of
    ``buffer_size`` (those past it count as unpaired in the agreement figures),
    and a router flushes as soon as ``flush_max`` of them wait. A flush the
    Validator does not take is dropped and counted.
    The Validator answers each flush with the traffic plans; a router with
    nothing to send still asks for them every ``plan_poll_s``, and keeps the
    last ones when the Validator does not answer.
    Every replica, of a version or of the router, sends its request counters every
    ``replica_report_s`` (``rayfleet_replica_requests`` in ``/metrics``). A page
    the router forwards to the Validator (``/metrics``, ``/-/...``) answers 503
    with ``Retry-After`` when the Validator has not answered in
    ``forward_timeout_s``.

    The Validator keeps observations in ``bucket_s`` buckets for ``horizon_s``,
    tests input drift at family-wise level ``alpha``, and takes ``num_cpus``;
    ``enabled: false`` runs no Validator, so nothing is observed or rolled out.
    ``label_selector`` places the Validator on nodes with those Ray labels.
    """

    enabled: bool = True
    # Feature summaries are the costliest part of an observation (about 10 us of
    # the router's time each); input drift needs only a sample (500 rows a bucket).
    sample_rate: float = Field(default=0.25, ge=0, le=1)
    buffer_size: PositiveInt = 20_000
    # Each flush is a Serve handle call on the router's event loop; a rollout
    # reads what it carries in 10 s buckets, so once a second is soon enough.
    flush_every_s: PositiveFloat = 1.0
    flush_max: PositiveInt = 1000
    plan_poll_s: PositiveFloat = 1.0
    replica_report_s: PositiveFloat = 5.0
    # A person or a scraper waits on a forwarded page, and Prometheus's own scrape
    # timeout is 10 s by default; a restarting Validator is back within about 20 s.
    forward_timeout_s: PositiveFloat = 10.0
    bucket_s: PositiveFloat = 10.0
    horizon_s: PositiveFloat = 3600.0
    alpha: float = Field(default=0.05, gt=0, lt=1)
    num_cpus: NonNegativeFloat = 0.25
    label_selector: LabelSelector | None = None


class RequestLogSpec(Spec):
    """An optional log of the requests served, as Parquet files in the store.

    With ``enabled``, each router keeps ``sample_rate`` of the requests its
    versions ran (chosen by a hash of the request's ``x-request-id``, so a
    request is kept whole or not at all, its shadow copy with it): one row per
    item of the request's batch, with the inputs, the outputs, the version, the
    status and the latency. Rows are written off the request path, by one thread
    per router, as ``{store}/_logs/{model}/{version}/date=YYYY-MM-DD/part-*.parquet``
    every ``flush_every_s`` or as soon as ``flush_max_rows`` rows wait. The
    router holds at most ``max_buffer_bytes`` of logged tensors, those waiting
    and those being written; a request that would go over is dropped and
    counted (``rayfleet_request_log_dropped_total``), never waited for.
    """

    enabled: bool = False
    # A tenth of the traffic is a validation set within the hour for most
    # models, at a tenth of the cost of logging everything.
    sample_rate: float = Field(default=0.1, ge=0, le=1)
    # A minute of rows per part keeps files few (each part is one object on S3)
    # and loses at most a minute of log when a router dies.
    flush_every_s: PositiveFloat = 60.0
    flush_max_rows: PositiveInt = 100_000
    # A quarter of what a router may decode for one request by default: enough
    # to hold a minute of small-model traffic, small beside the router's memory.
    max_buffer_bytes: PositiveInt = 64 * 1024 * 1024


class PlatformSpec(Spec):
    """Everything rayfleet serves in one Serve application.

    ``admin_token_env`` names the environment variable that holds the bearer
    token of the admin routes; the token itself never appears in a config.
    """

    # ``observations`` was ``validation`` before 0.2.0.
    RENAMED_KEYS: ClassVar[Mapping[str, str]] = {"validation": "observations"}

    store: str = Field(min_length=1, description="model store URI: path, s3://, gs://")
    router: RouterSpec = RouterSpec()
    observations: ObservationSpec = ObservationSpec()
    request_log: RequestLogSpec = RequestLogSpec()
    tracing: TracingSpec = TracingSpec()
    webhooks: tuple[WebhookSpec, ...] = ()
    admin_token_env: str = Field(
        default="RAYFLEET_ADMIN_TOKEN", pattern=r"^[A-Z_][A-Z0-9_]*$"
    )
    pools: tuple[PoolSpec, ...] = ()
    models: tuple[ModelSpec, ...] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique_models(self) -> PlatformSpec:
        names = [model.name for model in self.models]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"model names must be unique; repeated: {duplicates}")
        return self

    @model_validator(mode="after")
    def _pools_declared_and_used(self) -> PlatformSpec:
        names = [pool.name for pool in self.pools]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"pool names must be unique; repeated: {duplicates}")
        used: set[str] = set()
        for model in self.models:
            for version in model.versions:
                if version.pool is None:
                    continue
                if version.pool not in names:
                    declared = f"declared: {names}" if names else "none declared"
                    raise ValueError(
                        f"version {model.name}/{version.name} is placed in pool "
                        f"{version.pool!r}, which is not under pools ({declared}); "
                        f"declare it, e.g. pools: [{{name: {version.pool}}}]"
                    )
                used.add(version.pool)
        idle = [name for name in names if name not in used]
        if idle:
            raise ValueError(
                f"pools without versions: {idle}; a pool with no versions would "
                "only hold idle replicas: place a version in it "
                "({placement: pool, pool: NAME}) or drop it"
            )
        return self

    def model(self, name: str) -> ModelSpec:
        """The model called ``name``."""
        for model in self.models:
            if model.name == name:
                return model
        raise KeyError(name)

    def pool(self, name: str) -> PoolSpec:
        """The pool called ``name``."""
        for pool in self.pools:
            if pool.name == name:
                return pool
        raise KeyError(name)

    def label_selectors(self) -> dict[str, LabelSelector]:
        """Every ``label_selector`` set, by its field path (``router``,
        ``observations``, ``pools.0``, ``models.0.versions.1``)."""
        found = {
            "router": self.router.label_selector,
            "observations": self.observations.label_selector,
        }
        for p, pool in enumerate(self.pools):
            found[f"pools.{p}"] = pool.label_selector
        for m, model in enumerate(self.models):
            for v, version in enumerate(model.versions):
                found[f"models.{m}.versions.{v}"] = version.label_selector
        return {where: chosen for where, chosen in found.items() if chosen}


def parse_spec(args: Mapping[str, Any], source: str = "args") -> PlatformSpec:
    """Validate ``args`` into a :class:`PlatformSpec`.

    Raises :class:`ConfigError` whose message lists every problem with its field
    path, e.g. ``args.models.0.versions.1.batching.max_batch_size: ...``.
    """
    try:
        return PlatformSpec.model_validate(dict(args))
    except ValidationError as error:
        lines = []
        for problem in error.errors():
            path = ".".join(str(part) for part in (source, *problem["loc"]))
            lines.append(f"{path}: {problem['msg']}")
        raise ConfigError("invalid rayfleet spec:\n  " + "\n  ".join(lines)) from None
