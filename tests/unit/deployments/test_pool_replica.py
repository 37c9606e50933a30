"""PoolReplica's own behaviour, without Ray: the class built as Serve would,
with Serve's request context (the multiplexed model id) and controller client
stood in for.

Two python versions of one model, ``a`` (y = 2x) and ``b`` (y = 3x), share the
pool; ``broken`` raises while loading.
"""

from __future__ import annotations

import asyncio
import contextvars
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from ray import serve

import rayfleet.deployments.pool as pool_module
from rayfleet.deployments.pool import PooledVersion, PoolReplica
from rayfleet.platform.config.spec import PoolSpec, VersionSpec
from rayfleet.platform.config.store import MANIFEST, Manifest
from rayfleet.platform.errors import ServiceUnavailable
from tests.models import TEST_MODEL, write_python_version

TRIPLE = TEST_MODEL.replace('return {"y": x * 2}', 'return {"y": x * 3}')
BROKEN = "def load(version_dir):\n    raise RuntimeError('weights corrupt')\n"
WAIT_S = 0.2

model_id: contextvars.ContextVar[str] = contextvars.ContextVar("model_id")


class Controller:
    """Serve's controller client: what each replica said it holds, in order."""

    def __init__(self) -> None:
        self.told: list[list[str]] = []

    def record_request_routing_info(self, info: Any) -> None:
        self.told.append(list(info.multiplexed_model_ids))


@pytest.fixture
def store(tmp_path: Path) -> Path:
    write_python_version(tmp_path, "m", "a")
    write_python_version(tmp_path, "m", "b", source=TRIPLE)
    write_python_version(tmp_path, "m", "broken", source=BROKEN)
    return tmp_path


@pytest.fixture
def controller(monkeypatch: pytest.MonkeyPatch) -> Controller:
    told = Controller()
    monkeypatch.setattr(pool_module, "send_to_serve", lambda: None)
    monkeypatch.setattr(pool_module, "_get_global_client", lambda: told)
    monkeypatch.setattr(
        serve,
        "get_replica_context",
        lambda: SimpleNamespace(replica_id=SimpleNamespace(unique_id="r1")),
    )
    monkeypatch.setattr(serve, "get_multiplexed_model_id", model_id.get)
    return told


async def make_pool(store: Path, canaries: tuple[str, ...] = (), **pool: Any) -> Any:
    """A replica built as Serve builds it: ``__new__``, then the awaited
    ``__init__``."""
    versions = {}
    for name in ("a", "b", "broken"):
        manifest = Manifest.model_validate_json(
            (store / "m" / name / MANIFEST).read_text()
        )
        spec = VersionSpec(
            name=name,
            placement="pool",
            pool="p",
            batching={"max_batch_size": 8, "batch_wait_timeout_s": WAIT_S},  # type: ignore[arg-type]
            canary=name in canaries,
        )
        versions[f"m/{name}"] = PooledVersion("m", spec, manifest, 100).to_dict()
    cls: Any = PoolReplica.func_or_class  # type: ignore[attr-defined]
    spec = PoolSpec(name="p", **pool).model_dump(mode="json")
    replica = cls.__new__(cls)
    await replica.__init__(spec, versions, str(store), None, 5.0, None)
    return replica


async def call(replica: Any, key: str, x: float, rows: int = 1) -> Any:
    """One request for ``key``, in a context of its own as Serve gives it."""

    async def run() -> Any:
        model_id.set(key)
        return await replica.infer({"x": np.full((rows, 2), x, dtype=np.float32)})

    return await contextvars.Context().run(asyncio.ensure_future, run())


def test_a_batch_never_mixes_versions(store: Path, controller: Controller) -> None:
    async def scenario() -> list[Any]:
        replica = await make_pool(store)
        keys = ["m/a", "m/b"] * 4
        return await asyncio.gather(
            *(call(replica, key, float(i)) for i, key in enumerate(keys))
        )

    results = asyncio.run(scenario())
    for i, result in enumerate(results):
        factor = 2 if i % 2 == 0 else 3
        assert result.outputs["y"].tolist() == [[i * factor] * 2]
        # Each version's four requests batched together, never with the other's.
        assert result.batch_size == 4


def test_serve_hears_what_the_replica_holds(
    store: Path, controller: Controller
) -> None:
    async def scenario() -> None:
        replica = await make_pool(store, max_loaded_versions=1)
        await call(replica, "m/a", 1.0)
        await asyncio.sleep(0.3)
        await call(replica, "m/b", 1.0)
        await asyncio.sleep(0.3)

    asyncio.run(scenario())
    # Told with each version as it loaded, never two at once: "a" went to make
    # room for "b".
    assert ["m/a"] in controller.told
    assert all(len(held) <= 1 for held in controller.told)
    assert controller.told[-1] == ["m/b"]


def test_a_failed_load_is_a_503_and_the_replica_serves_on(
    store: Path, controller: Controller
) -> None:
    async def scenario() -> Any:
        replica = await make_pool(store)
        with pytest.raises(ServiceUnavailable, match="m/broken could not be loaded"):
            await call(replica, "m/broken", 1.0)
        # The next request hears the same failure without loading again.
        with pytest.raises(ServiceUnavailable, match="the last load failed"):
            await call(replica, "m/broken", 1.0)
        assert replica.cache.stats().load_failures == 1
        # Only a router ahead of this replica's config asks for another one.
        with pytest.raises(ServiceUnavailable, match="'p' does not serve 'm/zzz'"):
            await call(replica, "m/zzz", 1.0)
        return await call(replica, "m/a", 2.0)

    assert asyncio.run(scenario()).outputs["y"].tolist() == [[4.0, 4.0]]


def test_canaries_are_loaded_before_the_replica_is_up(
    store: Path, controller: Controller
) -> None:
    async def scenario() -> tuple[list[str], Any]:
        replica = await make_pool(store, canaries=("b", "broken"))
        return replica.cache.keys(), await call(replica, "m/b", 2.0)

    held, result = asyncio.run(scenario())
    # The broken canary failed to load and did not stop the replica; the good
    # one was held before its first request, and that request found it warm.
    assert held == ["m/b"]
    assert result.outputs["y"].tolist() == [[6.0, 6.0]]


def test_no_more_canaries_are_warmed_than_the_pool_holds(
    store: Path, controller: Controller
) -> None:
    async def scenario() -> list[str]:
        replica = await make_pool(store, canaries=("a", "b"), max_loaded_versions=1)
        held: list[str] = replica.cache.keys()
        return held

    assert asyncio.run(scenario()) == ["m/a"]
