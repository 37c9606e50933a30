"""``build(args)``: the ``import_path`` of a Serve config, spec in, application out.

Everything that can be wrong with a config is found here, when ``serve deploy`` or
``serve run`` builds the app: the spec's fields, and every version's manifest and
artifact in the store. A request never meets a missing model.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ray._private.label_utils import validate_label_selector
from ray.serve import Application

from rayfleet.autoscaling.serve_policy import autoscaling_config_for
from rayfleet.deployments.health import (
    deployment_name,
    pool_deployment_name,
    pooled_version_id,
)
from rayfleet.deployments.pool import PooledVersion, PoolReplica
from rayfleet.deployments.replica import DirectModelReplica, ModelReplica
from rayfleet.deployments.router import Router
from rayfleet.deployments.validator import Validator
from rayfleet.platform.config.spec import (
    AutoscalingSpec,
    PlatformSpec,
    PoolSpec,
    VersionSpec,
    parse_spec,
)
from rayfleet.platform.config.store import Manifest, ModelStore
from rayfleet.platform.constants import (
    ROUTER_TARGET_ONGOING_REQUESTS,
    SHUTDOWN_SLACK_S,
    SHUTDOWN_WAIT_LOOP_S,
)
from rayfleet.platform.errors import ConfigError
from rayfleet.platform.runtimes.triton import triton_manifest

__all__ = [
    "build",
    "build_from_spec",
    "label_selector_problems",
    "pool_size_problems",
    "pooled_version_bytes",
]

# Each version's manifest as plain data, by model and version.
Manifests = dict[str, dict[str, dict[str, Any]]]


def _manifest(store: ModelStore, model: str, version: VersionSpec) -> Manifest:
    if version.triton is not None:
        return triton_manifest(version.triton)
    try:
        return store.manifest(model, version.name, version.uri)
    except ConfigError as error:
        raise ConfigError(f"models.{model}.versions.{version.name}: {error}") from None


def _autoscaling_config(scaling: AutoscalingSpec, target: float) -> dict[str, Any]:
    return autoscaling_config_for(scaling, target, scaling.policy)


def label_selector_problems(spec: PlatformSpec) -> list[str]:
    """What Ray would refuse in the spec's label selectors, one line each with
    its field path; checked when the app is built and by ``rayfleet check``, so
    that a bad selector fails the deploy instead of leaving replicas pending."""
    return [
        f"{where}.label_selector: {problem}"
        for where, selector in spec.label_selectors().items()
        if (problem := validate_label_selector(dict(selector)))
    ]


def _actor_options(
    selector: Mapping[str, str] | None, **resources: float
) -> dict[str, Any]:
    options: dict[str, Any] = dict(resources)
    if selector:
        options["label_selector"] = dict(selector)
    return options


def _shutdown_options(spec: PlatformSpec) -> dict[str, float]:
    # A replica being removed first stops getting new requests, then waits for
    # what it holds: up to one full request deadline, so scale-down never fails
    # a request that was already routed to it.
    return {
        "graceful_shutdown_wait_loop_s": SHUTDOWN_WAIT_LOOP_S,
        "graceful_shutdown_timeout_s": spec.router.request_timeout_s + SHUTDOWN_SLACK_S,
    }


def _replica(
    model: str,
    version: VersionSpec,
    manifest: Manifest,
    spec: PlatformSpec,
    validator: Application | None,
) -> Application:
    # serve.deployment is typed as leaving the class unchanged: mypy cannot see
    # the Deployment it returns, so each .options call is ignored by name.
    deployment = DirectModelReplica if version.transport == "direct" else ModelReplica
    replica: Application = deployment.options(  # type: ignore[attr-defined]
        **_shutdown_options(spec),
        name=deployment_name(model, version.name),
        ray_actor_options=_actor_options(
            version.label_selector,
            num_cpus=version.num_cpus,
            num_gpus=version.num_gpus,
        ),
        autoscaling_config=_autoscaling_config(
            version.autoscaling, version.target_ongoing_requests
        ),
        max_ongoing_requests=version.replica_max_ongoing_requests,
        max_queued_requests=version.max_queued_requests,
    ).bind(
        model,
        version.model_dump(mode="json"),
        manifest.model_dump(mode="json"),
        spec.store,
        validator,
        spec.observations.replica_report_s,
        spec.tracing.model_dump(mode="json"),
        spec.router.request_timeout_s,
    )
    return replica


def pooled_version_bytes(
    spec: PlatformSpec, store: ModelStore
) -> dict[tuple[str, str], int]:
    """The bytes each version placed in a pool counts for against its pool's
    ``max_loaded_bytes``: its files in the store, manifest and reference aside.
    One listing of the store per pooled version."""
    return {
        (model.name, version.name): store.loaded_bytes(
            model.name, version.name, version.uri
        )
        for model in spec.models
        for version in model.versions
        if version.pool is not None
    }


def pool_size_problems(
    spec: PlatformSpec, sizes: Mapping[tuple[str, str], int]
) -> list[str]:
    """Versions too big for their pool's ``max_loaded_bytes`` (``sizes`` from
    :func:`pooled_version_bytes`), one line each with its field path: a replica
    could never load them. Checked when the app is built and by ``rayfleet check
    --store-check``."""
    problems = []
    for m, model in enumerate(spec.models):
        for v, version in enumerate(model.versions):
            if version.pool is None:
                continue
            limit = spec.pool(version.pool).max_loaded_bytes
            size = sizes[(model.name, version.name)]
            if limit is not None and size > limit:
                problems.append(
                    f"models.{m}.versions.{v}: {model.name}/{version.name}'s files "
                    f"are {size} bytes, over pool {version.pool!r}'s "
                    f"max_loaded_bytes ({limit}); raise the limit or place it in "
                    "a replica"
                )
    return problems


def _pooled_versions(
    spec: PlatformSpec,
    pool: PoolSpec,
    manifests: Manifests,
    sizes: Mapping[tuple[str, str], int],
) -> dict[str, dict[str, Any]]:
    """The versions placed in ``pool``, by their id in it, each with the bytes
    it counts for."""
    versions: dict[str, dict[str, Any]] = {}
    for model in spec.models:
        for version in model.versions:
            if version.pool != pool.name:
                continue
            manifest = Manifest.model_validate(manifests[model.name][version.name])
            size = sizes[(model.name, version.name)]
            pooled = PooledVersion(model.name, version, manifest, size)
            versions[pooled_version_id(model.name, version.name)] = pooled.to_dict()
    return versions


def _pool(
    pool: PoolSpec,
    versions: dict[str, dict[str, Any]],
    spec: PlatformSpec,
    validator: Application | None,
) -> Application:
    app: Application = PoolReplica.options(  # type: ignore[attr-defined]
        **_shutdown_options(spec),
        name=pool_deployment_name(pool.name),
        ray_actor_options=_actor_options(
            pool.label_selector, num_cpus=pool.num_cpus, num_gpus=pool.num_gpus
        ),
        autoscaling_config=_autoscaling_config(
            pool.autoscaling, pool.target_ongoing_requests
        ),
        max_ongoing_requests=pool.replica_max_ongoing_requests,
        max_queued_requests=pool.max_queued_requests,
    ).bind(
        pool.model_dump(mode="json"),
        versions,
        spec.store,
        validator,
        spec.observations.replica_report_s,
        spec.tracing.model_dump(mode="json"),
    )
    return app


def build_from_spec(spec: PlatformSpec) -> Application:
    """The Serve application for a validated spec: one router, one deployment per
    version placed in a replica, one per pool, and the Validator."""
    problems = label_selector_problems(spec)
    if problems:
        raise ConfigError("\n".join(problems))
    store = ModelStore(spec.store)
    sizes = pooled_version_bytes(spec, store)
    problems = pool_size_problems(spec, sizes)
    if problems:
        raise ConfigError("\n".join(problems))
    # Replicas may run in another working directory: give them an absolute root.
    spec = spec.model_copy(update={"store": store.uri})
    validator: Application | None = None
    if spec.observations.enabled:
        validator = Validator.options(  # type: ignore[attr-defined]
            ray_actor_options=_actor_options(
                spec.observations.label_selector,
                num_cpus=spec.observations.num_cpus,
            )
        ).bind(spec.model_dump(mode="json"))
    manifests: Manifests = {}
    replicas: dict[str, dict[str, Application]] = {}
    for model in spec.models:
        manifests[model.name] = {}
        replicas[model.name] = {}
        for version in model.versions:
            manifest = _manifest(store, model.name, version)
            manifests[model.name][version.name] = manifest.model_dump(mode="json")
            if version.placement == "replica":
                replicas[model.name][version.name] = _replica(
                    model.name, version, manifest, spec, validator
                )
    pools = {
        pool.name: _pool(
            pool, _pooled_versions(spec, pool, manifests, sizes), spec, validator
        )
        for pool in spec.pools
    }
    router = spec.router
    app: Application = Router.options(  # type: ignore[attr-defined]
        **_shutdown_options(spec),
        ray_actor_options=_actor_options(
            router.label_selector, num_cpus=router.num_cpus
        ),
        autoscaling_config=_autoscaling_config(
            router.autoscaling,
            router.autoscaling.target_ongoing_requests
            or ROUTER_TARGET_ONGOING_REQUESTS,
        ),
        max_ongoing_requests=router.max_ongoing_requests,
    ).bind(spec.model_dump(mode="json"), manifests, replicas, validator, pools)
    return app


def build(args: Mapping[str, Any]) -> Application:
    """Serve's application builder: ``import_path: rayfleet.deployments.app:build``.

    Raises
    :class:`~rayfleet.platform.errors.ConfigError` naming the field path of every
    problem in ``args``.
    """
    return build_from_spec(parse_spec(args))
