"""A replica Serve stops gracefully: its ``__del__`` hands Serve a drain of the
calls running on its direct channel, which answer before the drain ends, and
nothing to wait for when none runs. (Serve awaits a coroutine that a sync
``__del__`` returns; the integration suite's redeploy test covers Serve's side.)
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from rayfleet.deployments import replica as replica_module
from rayfleet.deployments.replica import DirectModelReplica
from rayfleet.platform.config.store import MANIFEST, Manifest
from rayfleet.platform.serving.channel import ChannelServer, DirectChannel, Endpoint
from tests.models import write_python_version

# The test model sleeps x - 1000 ms for x >= 1000.
SLOW_X = 1300.0


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr(replica_module, "send_to_serve", lambda: None)
    write_python_version(tmp_path, "m", "v1")
    return tmp_path


async def started_replica(store: Path) -> tuple[Any, ChannelServer]:
    """The replica class, as Serve builds it, with its channel started (Serve's
    ``channel_address`` does that, which needs Ray)."""
    manifest = Manifest.model_validate_json((store / "m/v1" / MANIFEST).read_text())
    cls: Any = DirectModelReplica.func_or_class  # type: ignore[attr-defined]
    replica = cls(
        "m",
        {"name": "v1", "transport": "direct"},
        manifest.model_dump(mode="json"),
        str(store),
        None,
        5.0,
        None,
        5.0,
    )
    channel = ChannelServer(replica.runner.infer, "127.0.0.1")
    await channel.start()
    replica.channel = channel
    return replica, channel


async def running_call(
    channel: ChannelServer, x: np.ndarray
) -> tuple[DirectChannel, asyncio.Task[Any]]:
    """A router's channel to the replica, and a call of ``x`` on it that the
    replica is running."""
    direct = DirectChannel("m/v1", 4)
    direct.update([Endpoint.from_address("r", channel.address())])
    call = asyncio.create_task(direct.infer({"x": x}))
    deadline = time.monotonic() + 5
    while not channel.in_flight:
        assert time.monotonic() < deadline, "the call never reached the replica"
        await asyncio.sleep(0.01)
    return direct, call


def test_a_stopping_replica_answers_its_running_call_first(store: Path) -> None:
    async def scenario() -> None:
        replica, channel = await started_replica(store)
        x = np.array([[SLOW_X, 0.0]], dtype=np.float32)
        direct, call = await running_call(channel, x)
        drain = replica.__del__()
        assert asyncio.iscoroutine(drain)
        assert not call.done()
        await asyncio.wait_for(drain, 5)
        # Answered where it ran, before the drain ended: not resent.
        assert call.done()
        np.testing.assert_array_equal(call.result().outputs["y"], x * 2)
        assert (channel.calls, channel.cancelled) == (1, 0)
        # Python's collection, later: nothing is left to wait for.
        assert replica.__del__() is None
        direct.close()

    asyncio.run(scenario())


def test_an_idle_replica_has_nothing_to_drain(store: Path) -> None:
    async def scenario() -> None:
        replica, channel = await started_replica(store)
        assert replica.__del__() is None
        assert channel.stopping

    asyncio.run(scenario())


def test_a_replica_collected_off_its_channels_loop_returns_nothing_to_await(
    store: Path,
) -> None:
    # Python may collect the replica on another thread's loop, at exit: a
    # coroutine returned there would never be awaited, and its calls could not
    # be waited for from that loop anyway.
    async def scenario() -> None:
        replica, channel = await started_replica(store)
        x = np.array([[SLOW_X, 0.0]], dtype=np.float32)
        direct, call = await running_call(channel, x)

        async def collect() -> object:
            return replica.__del__()

        assert await asyncio.to_thread(asyncio.run, collect()) is None
        assert channel.stopping
        # The running call still answers on the channel's own loop.
        await asyncio.wait_for(call, 5)
        direct.close()

    asyncio.run(scenario())
