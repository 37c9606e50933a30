"""What ``build`` hands to Serve: each deployment's actor options from the spec.

No Ray: building an application only binds deployments; nothing starts.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from ray.serve import Application

from rayfleet.deployments.app import build
from rayfleet.platform.config.signature import Signature, TensorSpec
from rayfleet.platform.config.store import MANIFEST, Manifest, PythonEntry
from rayfleet.platform.errors import ConfigError

HEAD = {"rayfleet.io/role": "head"}
A10G = {"ray.io/accelerator-type": "A10G"}


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> str:
    root = tmp_path_factory.mktemp("store")
    signature = Signature(
        inputs=(TensorSpec(name="x", datatype="FP32", shape=(-1, 4)),),
        outputs=(TensorSpec(name="y", datatype="FP32", shape=(-1,)),),
    )
    manifest = Manifest(
        runtime="python", signature=signature, python=PythonEntry(callable="m:load")
    )
    for version in ("v1", "v2"):
        folder = Path(root, "m", version)
        folder.mkdir(parents=True)
        (folder / MANIFEST).write_text(manifest.to_json())
    # A version with an artifact of 1000 bytes, for a pool's byte bound.
    folder = Path(root, "big", "v1")
    folder.mkdir(parents=True)
    (folder / "m.py").write_text("#" * 1000)
    big = manifest.model_copy(update={"artifact": "m.py"})
    (folder / MANIFEST).write_text(big.to_json())
    return str(root)


def _args(store: str, **overrides: Any) -> dict[str, Any]:
    versions = [
        {"name": "v1", "num_cpus": 0.5, "num_gpus": 0.25, "label_selector": A10G},
        {"name": "v2", "placement": "router"},
    ]
    return {
        "store": store,
        "models": [{"name": "m", "versions": versions}],
        **overrides,
    }


def _options(app: Application) -> dict[str, dict[str, Any]]:
    """Each bound deployment's name and actor options, router first."""
    router = app._bound_deployment
    found = {router.name: router.ray_actor_options}
    _spec, _manifests, replicas, validator, pools = router.init_args
    bound = [app for versions in replicas.values() for app in versions.values()]
    for deployment in [*bound, *pools.values()]:
        found[deployment._bound_deployment.name] = (
            deployment._bound_deployment.ray_actor_options
        )
    if validator is not None:
        found["Validator"] = validator._bound_deployment.ray_actor_options
    return found


def test_label_selectors_reach_each_deployment(store: str) -> None:
    app = build(
        _args(
            store,
            router={"label_selector": HEAD, "num_cpus": 1},
            observations={"label_selector": HEAD, "num_cpus": 0.25},
        )
    )
    options = _options(app)
    assert options["Router"] == {"num_cpus": 1.0, "label_selector": HEAD}
    assert options["Validator"] == {"num_cpus": 0.25, "label_selector": HEAD}
    (replica,) = [name for name in options if name not in ("Router", "Validator")]
    assert options[replica] == {
        "num_cpus": 0.5,
        "num_gpus": 0.25,
        "label_selector": A10G,
    }


def test_without_selectors_serve_places_freely(store: str) -> None:
    options = _options(
        build({**_args(store), "models": [{"name": "m", "versions": [{"name": "v1"}]}]})
    )
    assert all("label_selector" not in each for each in options.values())


def test_a_bad_selector_fails_the_build_with_its_field_path(store: str) -> None:
    bad = {"bad key!": "x"}
    with pytest.raises(ConfigError) as raised:
        build(
            _args(
                store,
                router={"label_selector": bad},
                models=[
                    {"name": "m", "versions": [{"name": "v1", "label_selector": bad}]}
                ],
            )
        )
    lines = str(raised.value).splitlines()
    assert [line.split(":")[0] for line in lines] == [
        "router.label_selector",
        "models.0.versions.0.label_selector",
    ]
    assert all("Invalid label key name `bad key!`" in line for line in lines)


def test_the_tracing_block_reaches_the_router_and_each_replica(store: str) -> None:
    tracing = {
        "enabled": True,
        "otlp_endpoint": "http://collector:4318/v1/traces",
        "sample_rate": 0.5,
    }
    router = build(_args(store, tracing=tracing))._bound_deployment
    spec, _manifests, replicas, _validator, _pools = router.init_args
    assert spec["tracing"]["otlp_endpoint"] == tracing["otlp_endpoint"]
    (replica,) = replicas["m"].values()
    # The replica's last arguments: the block as the spec validated it, then
    # how long it drains its direct calls (the router's request timeout).
    *_, replica_tracing, drain_timeout_s = replica._bound_deployment.init_args
    assert replica_tracing == {
        **tracing,
        "service_name": "rayfleet",
        "export_every_s": 5.0,
    }
    assert drain_timeout_s == 30.0


def _pooled(store: str, **pool: Any) -> dict[str, Any]:
    return _args(
        store,
        pools=[{"name": "shared", "num_cpus": 0.5, "label_selector": HEAD, **pool}],
        models=[
            {
                "name": "m",
                "versions": [
                    {"name": "v1", "placement": "router"},
                    {"name": "v2", "placement": "pool", "pool": "shared"},
                ],
            },
            {
                "name": "big",
                "versions": [{"name": "v1", "placement": "pool", "pool": "shared"}],
            },
        ],
    )


def test_a_pool_is_one_deployment_serving_its_versions(store: str) -> None:
    app = build(_pooled(store, max_loaded_bytes=1000))
    options = _options(app)
    assert set(options) == {"Router", "Validator", "pool-shared"}
    assert options["pool-shared"] == {
        "num_cpus": 0.5,
        "num_gpus": 0.0,
        "label_selector": HEAD,
    }
    _spec, _manifests, replicas, _validator, pools = app._bound_deployment.init_args
    assert replicas == {"m": {}, "big": {}}
    pool_args = pools["shared"]._bound_deployment.init_args
    versions = pool_args[1]
    assert sorted(versions) == ["big/v1", "m/v2"]
    # What each version counts against max_loaded_bytes: its files' bytes,
    # manifest and reference aside.
    assert versions["big/v1"]["size_bytes"] == 1000
    assert versions["m/v2"]["size_bytes"] == 0


def test_a_version_bigger_than_its_pool_fails_the_build(store: str) -> None:
    with pytest.raises(
        ConfigError,
        match=re.escape(
            "models.1.versions.0: big/v1's files are 1000 bytes, over pool 'shared'"
        ),
    ):
        build(_pooled(store, max_loaded_bytes=999))
