"""BackgroundTasks: one task per name, failures logged, all cancelled together."""

from __future__ import annotations

import asyncio
import logging
import threading

import pytest

from rayfleet.platform.background import BackgroundTasks


async def _forever() -> None:
    await asyncio.Event().wait()


def test_a_running_task_is_started_once() -> None:
    async def main() -> None:
        tasks = BackgroundTasks("test")
        first = tasks.start("loop", _forever)
        assert tasks.start("loop", _forever) is first
        assert tasks.running() == ["loop"]
        tasks.cancel()
        await asyncio.sleep(0)
        assert first.cancelled()
        assert tasks.running() == []
        # A task that ended is started again.
        second = tasks.start("loop", _forever)
        assert second is not first
        tasks.cancel()

    asyncio.run(main())


def test_a_task_that_dies_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    async def broken() -> None:
        raise RuntimeError("boom")

    async def main() -> None:
        tasks = BackgroundTasks("owner")
        task = tasks.start("flush", broken)
        await asyncio.wait([task])
        await asyncio.sleep(0)  # done callbacks run on the next turn

    with caplog.at_level(logging.ERROR, logger="ray.serve"):
        asyncio.run(main())
    [record] = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert "'owner: flush' died" in record.getMessage()
    assert record.exc_info is not None and "boom" in str(record.exc_info[1])


def test_cancel_from_another_thread() -> None:
    async def main() -> None:
        tasks = BackgroundTasks("test")
        task = tasks.start("loop", _forever)
        await asyncio.sleep(0)
        # Serve may call a replica's __del__ off its event loop's thread.
        thread = threading.Thread(target=tasks.cancel)
        thread.start()
        await asyncio.to_thread(thread.join)
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())


def test_cancel_after_the_loop_closed_does_nothing() -> None:
    tasks = BackgroundTasks("test")

    async def main() -> None:
        tasks.start("loop", _forever)

    loop = asyncio.new_event_loop()
    loop.run_until_complete(main())
    loop.close()
    tasks.cancel()
