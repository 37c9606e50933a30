"""Model pools in the spec: ``pools:`` and versions with ``placement: pool``."""

from __future__ import annotations

from typing import Any

import pytest

from rayfleet.platform.config.spec import (
    AutoscalingSpec,
    PlatformSpec,
    PoolSpec,
    VersionSpec,
    parse_spec,
)
from rayfleet.platform.errors import ConfigError


def pooled(name: str = "v2", pool: str = "small", **fields: Any) -> dict[str, Any]:
    return {"name": name, "placement": "pool", "pool": pool, **fields}


def spec(
    *entries: dict[str, Any], pools: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    return {
        "store": "/models",
        "pools": [{"name": "small"}] if pools is None else pools,
        "models": [{"name": "digits", "versions": [{"name": "v1"}, *entries]}],
    }


def problem(args: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as raised:
        parse_spec(args)
    return str(raised.value)


# -- defaults and properties ------------------------------------------------------


def test_a_pool_has_the_agreed_defaults() -> None:
    pool = PoolSpec(name="small")
    assert (pool.num_cpus, pool.num_gpus) == (1.0, 0.0)
    assert pool.autoscaling == AutoscalingSpec()
    assert (pool.max_ongoing_requests, pool.max_queued_requests) == (None, -1)
    assert pool.label_selector is None
    assert (pool.max_loaded_versions, pool.max_loaded_bytes) == (8, None)
    assert pool.unload_after_s == 600.0


def test_a_spec_without_pools_has_none_and_versions_stay_in_replicas() -> None:
    parsed = parse_spec(spec(pools=[]))
    assert parsed.pools == ()
    version = parsed.model("digits").version("v1")
    assert (version.placement, version.pool) == ("replica", None)


def test_a_pooled_version_is_read_and_its_pool_found() -> None:
    parsed = parse_spec(
        spec(
            pooled(canary=True, batching={"max_batch_size": 4}),
            pools=[{"name": "small", "max_loaded_versions": 3, "unload_after_s": None}],
        )
    )
    version = parsed.model("digits").version("v2")
    assert (version.placement, version.pool, version.canary) == ("pool", "small", True)
    assert version.batching.max_batch_size == 4
    pool = parsed.pool("small")
    assert (pool.max_loaded_versions, pool.unload_after_s) == (3, None)
    with pytest.raises(KeyError):
        parsed.pool("large")


@pytest.mark.parametrize(
    ("fields", "target", "limit"),
    [
        ({}, 16.0, 128),
        ({"autoscaling": {"target_ongoing_requests": 2.5}}, 2.5, 64),
        ({"autoscaling": {"target_ongoing_requests": 32}}, 32.0, 256),
        ({"max_ongoing_requests": 5}, 16.0, 5),
    ],
)
def test_a_pool_targets_one_default_batch_and_takes_eight_targets(
    fields: dict[str, Any], target: float, limit: int
) -> None:
    pool = PoolSpec.model_validate({"name": "small", **fields})
    assert pool.target_ongoing_requests == target
    assert pool.replica_max_ongoing_requests == limit


def test_label_selectors_include_pools_by_their_path() -> None:
    parsed = parse_spec(
        spec(
            pooled(),
            pooled("v3", pool="gpu"),
            pools=[
                {"name": "small"},
                {"name": "gpu", "label_selector": {"rayfleet.io/gpu": "a10g"}},
            ],
        )
    )
    assert parsed.label_selectors() == {"pools.1": {"rayfleet.io/gpu": "a10g"}}


def test_a_spec_with_pools_round_trips_through_a_full_dump() -> None:
    parsed = parse_spec(
        spec(
            pooled(canary=True, weight=5),
            pools=[
                {
                    "name": "small",
                    "num_gpus": 0.5,
                    "autoscaling": {"min_replicas": 0, "max_replicas": 3},
                    "max_loaded_bytes": 1 << 30,
                    "label_selector": {"rayfleet.io/gpu": "a10g"},
                }
            ],
        )
    )
    dumped = parsed.model_dump(mode="json")
    # Every field is in the dump, those a pooled version may not give included.
    assert dumped["models"][0]["versions"][1]["num_cpus"] == 1.0
    assert list(dumped).index("pools") < list(dumped).index("models")
    assert PlatformSpec.model_validate(dumped) == parsed


# -- a version and its placement ---------------------------------------------------


@pytest.mark.parametrize(
    ("version", "message"),
    [
        (
            {"name": "v2", "placement": "pool"},
            "placement: pool needs the pool's name, one declared under pools, "
            "e.g. {placement: pool, pool: small}",
        ),
        (
            {"name": "v2", "pool": "small"},
            "pool 'small' needs placement: pool, e.g. {placement: pool, pool: small}",
        ),
        (
            {"name": "v2", "placement": "router", "pool": "small"},
            "pool 'small' needs placement: pool",
        ),
        (
            pooled(
                runtime="triton",
                triton={"url": "127.0.0.1:8001", "model_name": "m"},
            ),
            "a triton version cannot be in a pool: it runs on its server and "
            "loads nothing in rayfleet; use placement: replica",
        ),
        (
            pooled(num_cpus=2),
            "a version in a pool takes its resources, scaling and limits from the "
            "pool: num_cpus belongs on the pool (pools[].num_cpus), not on the "
            "version",
        ),
        (
            pooled(num_gpus=1, require_gpu=True),
            "num_gpus, require_gpu belong on the pool (pools[].num_gpus, "
            "pools[].require_gpu)",
        ),
    ],
)
def test_a_pooled_version_that_does_not_fit_is_refused_at_its_path(
    version: dict[str, Any], message: str
) -> None:
    text = problem(spec(version))
    assert "args.models.0.versions.1:" in text
    assert message in text


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("num_cpus", 0.5),
        ("num_gpus", 1),
        ("autoscaling", {"max_replicas": 4}),
        ("max_ongoing_requests", 8),
        ("max_queued_requests", 10),
        ("label_selector", {"rayfleet.io/gpu": "a10g"}),
        ("require_gpu", True),
    ],
)
def test_each_field_the_pool_owns_is_refused_on_a_pooled_version(
    field: str, value: Any
) -> None:
    text = problem(spec(pooled(**{field: value})))
    assert f"from the pool: {field} belongs on the pool (pools[].{field})" in text


def test_the_pool_s_fields_are_named_in_declaration_order() -> None:
    with pytest.raises(ValueError) as raised:
        VersionSpec.model_validate(
            pooled(label_selector={"a": "b"}, autoscaling={"max_replicas": 2})
        )
    assert "from the pool: autoscaling, label_selector belong on the pool" in str(
        raised.value
    )


def test_a_pooled_version_may_batch_on_its_own_and_give_the_pool_s_defaults() -> None:
    # A full dump gives every field at its default; that must still parse.
    version = VersionSpec.model_validate(
        pooled(batching={"max_batch_size": 1}, num_cpus=1.0, require_gpu=False)
    )
    assert version.batching.max_batch_size == 1


# -- pools and the versions in them ------------------------------------------------


@pytest.mark.parametrize(
    ("args", "path", "message"),
    [
        (
            spec(pooled(), pools=[{"name": "small"}, {"name": "small"}]),
            "args:",
            "pool names must be unique; repeated: ['small']",
        ),
        (
            spec(pooled(pool="large")),
            "args:",
            "version digits/v2 is placed in pool 'large', which is not under pools "
            "(declared: ['small']); declare it, e.g. pools: [{name: large}]",
        ),
        (
            spec(pooled(), pools=[]),
            "args:",
            "version digits/v2 is placed in pool 'small', which is not under pools "
            "(none declared)",
        ),
        (
            spec(pooled(), pools=[{"name": "small"}, {"name": "idle"}]),
            "args:",
            "pools without versions: ['idle']; a pool with no versions would only "
            "hold idle replicas: place a version in it "
            "({placement: pool, pool: NAME}) or drop it",
        ),
        (
            spec(pools=[{"name": "small"}]),
            "args:",
            "pools without versions: ['small']",
        ),
        (
            spec(pooled(), pools=[{"name": "bad name"}]),
            "args.pools.0.name:",
            "'bad name' is not a valid name",
        ),
        (
            spec(pooled(), pools=[{"name": "small", "max_loaded_versions": 0}]),
            "args.pools.0.max_loaded_versions:",
            "greater than 0",
        ),
        (
            spec(pooled(), pools=[{"name": "small", "max_loaded_bytes": 0}]),
            "args.pools.0.max_loaded_bytes:",
            "greater than 0",
        ),
        (
            spec(pooled(), pools=[{"name": "small", "unload_after_s": 0}]),
            "args.pools.0.unload_after_s:",
            "greater than 0",
        ),
        (
            spec(pooled(), pools=[{"name": "small", "max_queued_requests": -2}]),
            "args.pools.0.max_queued_requests:",
            "greater than or equal to -1",
        ),
        (
            spec(pooled(), pools=[{"name": "small", "max_versions": 3}]),
            "args.pools.0.max_versions:",
            "Extra inputs are not permitted",
        ),
        (
            spec(
                pooled(),
                pools=[
                    {
                        "name": "small",
                        "autoscaling": {"min_replicas": 2, "max_replicas": 1},
                    }
                ],
            ),
            "args.pools.0.autoscaling:",
            "min_replicas (2) must not exceed max_replicas (1)",
        ),
    ],
)
def test_pools_that_do_not_fit_are_refused_at_their_path(
    args: dict[str, Any], path: str, message: str
) -> None:
    text = problem(args)
    assert path in text
    assert message in text
