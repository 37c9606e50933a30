"""DynamicBatcher: batches form when the model is free, and every caller gets
exactly its own answer."""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rayfleet.platform.serving.batcher import DynamicBatcher


class SlowDoubler:
    """A model that takes ``seconds`` per call whatever the batch, like a GPU."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.batches: list[list[int]] = []
        self.running = 0
        self.most_running = 0

    async def __call__(self, items: list[int]) -> Sequence[int | BaseException]:
        self.batches.append(items)
        self.running += 1
        self.most_running = max(self.most_running, self.running)
        await asyncio.sleep(self.seconds)
        self.running -= 1
        return [
            ValueError(f"negative {item}") if item < 0 else item * 2 for item in items
        ]


def test_requests_queued_while_the_model_runs_go_into_the_next_batch() -> None:
    model = SlowDoubler(0.05)

    async def scenario() -> list[int]:
        batcher = DynamicBatcher(model, max_batch_size=8, max_wait_s=0.001)
        first = asyncio.create_task(batcher.submit(0))
        await asyncio.sleep(0.01)  # the model is now busy with [0]
        rest = [asyncio.create_task(batcher.submit(i)) for i in range(1, 11)]
        return list(await asyncio.gather(first, *rest))

    assert asyncio.run(scenario()) == [2 * i for i in range(11)]
    # Serve's batcher would cut [1] .. [10] into many small batches 1 ms apart;
    # here all ten waited for the model, and the next call takes a full batch.
    assert model.batches == [[0], [1, 2, 3, 4, 5, 6, 7, 8], [9, 10]]


def test_a_lone_request_runs_at_once() -> None:
    model = SlowDoubler(0.0)

    async def scenario() -> float:
        batcher = DynamicBatcher(model, max_batch_size=4, max_wait_s=0.5)
        loop = asyncio.get_running_loop()
        started = loop.time()
        assert await batcher.submit(1) == 2
        return loop.time() - started

    # Nothing arrived before it: no evidence of company, so no 0.5 s wait.
    assert asyncio.run(scenario()) < 0.25
    assert model.batches == [[1]]


def test_a_request_that_follows_another_closely_waits_for_company() -> None:
    model = SlowDoubler(0.0)

    async def scenario() -> None:
        batcher = DynamicBatcher(model, max_batch_size=4, max_wait_s=0.05)
        first = asyncio.create_task(batcher.submit(1))
        await asyncio.sleep(0.01)
        # 10 ms after the first: arrivals are dense, so it waits, and the
        # third, 10 ms later still, joins its batch.
        second = asyncio.create_task(batcher.submit(2))
        await asyncio.sleep(0.01)
        third = asyncio.create_task(batcher.submit(3))
        await asyncio.gather(first, second, third)

    asyncio.run(scenario())
    assert model.batches == [[1], [2, 3]]


def test_wait_alone_makes_an_idle_model_wait_for_company_at_most_max_wait() -> None:
    model = SlowDoubler(0.0)

    async def scenario() -> None:
        batcher = DynamicBatcher(
            model, max_batch_size=4, max_wait_s=0.05, wait_alone=True
        )
        first = asyncio.create_task(batcher.submit(1))
        await asyncio.sleep(0.01)
        second = asyncio.create_task(batcher.submit(2))
        await asyncio.gather(first, second)
        # Alone, a request leaves once its own wait is over.
        loop = asyncio.get_running_loop()
        started = loop.time()
        await batcher.submit(3)
        assert 0.04 <= loop.time() - started < 0.5

    asyncio.run(scenario())
    assert model.batches == [[1, 2], [3]]


def test_a_full_batch_leaves_without_waiting() -> None:
    model = SlowDoubler(0.0)

    async def scenario() -> float:
        batcher = DynamicBatcher(model, max_batch_size=3, max_wait_s=10.0)
        loop = asyncio.get_running_loop()
        started = loop.time()
        await asyncio.gather(*(batcher.submit(i) for i in range(3)))
        return loop.time() - started

    assert asyncio.run(scenario()) < 1.0
    assert model.batches == [[0, 1, 2]]


def test_one_failing_item_fails_only_its_caller() -> None:
    model = SlowDoubler(0.0)

    async def scenario() -> list[int | BaseException]:
        batcher = DynamicBatcher(model, max_batch_size=4, max_wait_s=0.01)
        return list(
            await asyncio.gather(
                *(batcher.submit(i) for i in (1, -1, 3)), return_exceptions=True
            )
        )

    first, bad, third = asyncio.run(scenario())
    assert (first, third) == (2, 6)
    assert isinstance(bad, ValueError)


def test_a_batch_that_raises_fails_its_callers_and_the_batcher_goes_on() -> None:
    calls = 0

    async def flaky(items: list[int]) -> Sequence[int]:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("device lost")
        return items

    async def scenario() -> tuple[list[int | BaseException], int]:
        batcher = DynamicBatcher(flaky, max_batch_size=4, max_wait_s=0.01)
        failed = await asyncio.gather(
            *(batcher.submit(i) for i in range(2)), return_exceptions=True
        )
        return list(failed), await batcher.submit(7)

    failed, after = asyncio.run(scenario())
    assert all(isinstance(error, RuntimeError) for error in failed)
    assert after == 7


def test_a_cancelled_request_is_left_out_of_its_batch() -> None:
    model = SlowDoubler(0.05)

    async def scenario() -> None:
        batcher = DynamicBatcher(model, max_batch_size=8, max_wait_s=0.001)
        busy = asyncio.create_task(batcher.submit(0))
        await asyncio.sleep(0.01)
        gone = asyncio.create_task(batcher.submit(1))
        kept = asyncio.create_task(batcher.submit(2))
        await asyncio.sleep(0.005)
        gone.cancel()
        assert await kept == 4
        await busy

    asyncio.run(scenario())
    assert model.batches == [[0], [2]]


def test_concurrent_batches_are_capped() -> None:
    model = SlowDoubler(0.02)

    async def scenario() -> None:
        batcher = DynamicBatcher(
            model, max_batch_size=2, max_wait_s=0.0, max_concurrent=2
        )
        await asyncio.gather(*(batcher.submit(i) for i in range(12)))

    asyncio.run(scenario())
    assert model.most_running == 2


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="max_batch_size"):
        DynamicBatcher(SlowDoubler(0), max_batch_size=0, max_wait_s=0.01)


@settings(max_examples=40, deadline=None)
@given(
    arrivals=st.lists(st.integers(min_value=0, max_value=3), min_size=1, max_size=40),
    max_batch_size=st.integers(min_value=1, max_value=6),
    max_concurrent=st.integers(min_value=1, max_value=3),
)
def test_every_caller_gets_its_own_answer_in_bounded_batches(
    arrivals: list[int], max_batch_size: int, max_concurrent: int
) -> None:
    """Requests arrive in groups separated by ``arrivals`` ms; whatever the timing,
    each gets twice its own number and no batch is over the limit."""
    model = SlowDoubler(0.001)

    async def scenario() -> list[int]:
        batcher = DynamicBatcher(
            model, max_batch_size, max_wait_s=0.002, max_concurrent=max_concurrent
        )
        tasks = []
        for index, gap_ms in enumerate(arrivals):
            tasks.append(asyncio.create_task(batcher.submit(index)))
            await asyncio.sleep(gap_ms / 1000)
        return list(await asyncio.gather(*tasks))

    assert asyncio.run(scenario()) == [2 * i for i in range(len(arrivals))]
    assert all(1 <= len(batch) <= max_batch_size for batch in model.batches)
    assert sorted(i for batch in model.batches for i in batch) == list(
        range(len(arrivals))
    )
    assert model.most_running <= max_concurrent


def test_a_cancelled_worker_leaves_no_caller_waiting() -> None:
    started = asyncio.Event()

    async def stuck(items: list[int]) -> Sequence[int]:
        started.set()
        await asyncio.sleep(3600)
        return items

    async def scenario() -> bool:
        batcher = DynamicBatcher(stuck, max_batch_size=4, max_wait_s=0.0)
        caller = asyncio.create_task(batcher.submit(1))
        await started.wait()
        for worker in batcher._workers:
            worker.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(caller, 5)
        return caller.cancelled()

    assert asyncio.run(scenario())


WHO: contextvars.ContextVar[str] = contextvars.ContextVar("who", default="nobody")


@pytest.mark.parametrize(
    ("carry_context", "seen"),
    [(True, [["a"], ["b", "b"]]), (False, [["a"], ["a", "a"]])],
)
def test_carry_context_runs_each_batch_in_its_first_requests_context(
    carry_context: bool, seen: list[list[str]]
) -> None:
    """What a request set in context (its trace span) is current while its batch
    runs, not what the submission that started the worker set."""
    contexts: list[list[str]] = []

    async def model(items: list[str]) -> Sequence[str]:
        contexts.append([WHO.get()] * len(items))
        await asyncio.sleep(0.05)
        return items

    async def as_(name: str, batcher: DynamicBatcher[str, str]) -> str:
        WHO.set(name)
        return await batcher.submit(name)

    async def scenario() -> None:
        batcher = DynamicBatcher(
            model, max_batch_size=4, max_wait_s=0.0, carry_context=carry_context
        )
        first = asyncio.create_task(as_("a", batcher))
        await asyncio.sleep(0.01)  # the model is busy with ["a"]
        rest = [asyncio.create_task(as_(name, batcher)) for name in "bc"]
        assert await asyncio.gather(first, *rest) == ["a", "b", "c"]

    asyncio.run(scenario())
    assert contexts == seen


def test_close_cancels_running_and_queued_requests_and_refuses_new_ones() -> None:
    started = asyncio.Event()

    async def stuck(items: list[int]) -> Sequence[int]:
        started.set()
        await asyncio.sleep(3600)
        return items

    async def scenario() -> None:
        batcher = DynamicBatcher(stuck, max_batch_size=1, max_wait_s=0.0)
        running = asyncio.create_task(batcher.submit(1))
        await started.wait()
        queued = [asyncio.create_task(batcher.submit(i)) for i in (2, 3)]
        await asyncio.sleep(0)
        assert len(batcher) == 2
        workers = list(batcher._workers)
        batcher.close()
        # Nobody waits for ever: the batch in the model and the queue both end.
        done, _ = await asyncio.wait([running, *queued], timeout=5)
        assert len(done) == 3
        assert all(task.cancelled() for task in done)
        assert len(batcher) == 0
        assert all(worker.done() for worker in workers)
        with pytest.raises(RuntimeError, match="closed"):
            await batcher.submit(4)

    asyncio.run(scenario())


def test_close_before_any_request_and_twice_is_harmless() -> None:
    async def scenario() -> None:
        batcher = DynamicBatcher(SlowDoubler(0.0), max_batch_size=2, max_wait_s=0.0)
        batcher.close()
        batcher.close()
        with pytest.raises(RuntimeError, match="closed"):
            await batcher.submit(1)

    asyncio.run(scenario())


@pytest.mark.parametrize("max_batch_size", [1, 8])
def test_a_batcher_serves_again_from_a_second_event_loop(max_batch_size: int) -> None:
    # A script that calls asyncio.run twice on one app, or a test client that
    # opens a loop per request: the second loop must not inherit the first's
    # workers, whose Event would refuse it (and once spun its worker for ever).
    model = SlowDoubler(0.0)
    batcher = DynamicBatcher(model, max_batch_size=max_batch_size, max_wait_s=0.001)

    async def one(item: int) -> int:
        return await asyncio.wait_for(batcher.submit(item), timeout=5)

    assert [asyncio.run(one(item)) for item in (1, 2, 3)] == [2, 4, 6]
    assert model.batches == [[1], [2], [3]]
