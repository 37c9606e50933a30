from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Mapping

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from rayfleet.platform.config.signature import Signature, TensorSpec
from rayfleet.platform.config.spec import BatchingSpec
from rayfleet.platform.runtimes.device import CPU, PYTHON, Device
from rayfleet.platform.serving.inline import INLINE_BELOW_MS, InlineRule
from rayfleet.platform.serving.runner import VersionRunner

SIGNATURE = Signature(
    inputs=(TensorSpec(name="x", datatype="FP32", shape=(-1, 2)),),
    outputs=(TensorSpec(name="y", datatype="FP32", shape=(-1, 2)),),
)


def test_a_new_rule_runs_in_the_thread_until_it_has_seen_enough() -> None:
    rule = InlineRule(settle=3)
    for _ in range(2):
        rule.observe(0.05, 8)
        assert not rule.inline_for(8)
    rule.observe(0.05, 8)
    assert rule.inline_for(8)
    assert rule.mean_ms == pytest.approx(0.05)


def test_one_slow_batch_sends_a_fast_model_back_to_the_thread() -> None:
    rule = InlineRule(settle=1, smoothing=0.1)
    rule.observe(0.1, 8)
    assert rule.inline_for(8)
    # 0.1 + 0.1 * (10 - 0.1) = 1.09 ms: over the 1 ms limit at once.
    rule.observe(10.0, 8)
    assert rule.mean_ms == pytest.approx(1.09)
    assert not rule.inline_for(8)
    # Fast again, it comes back once the mean is under the limit.
    rule.observe(0.1, 8)
    assert rule.mean_ms == pytest.approx(0.991)
    assert rule.inline_for(8)


def test_a_batch_far_larger_than_those_seen_runs_in_the_thread() -> None:
    rule = InlineRule(settle=1)
    # 0.1 ms for 8 elements: 0.0125 ms each, so 80 elements would take 1 ms.
    rule.observe(0.1, 8)
    assert rule.inline_for(79)
    assert not rule.inline_for(80)
    assert not rule.inline_for(250_000)


def test_a_model_at_the_limit_stays_in_the_thread() -> None:
    rule = InlineRule(settle=1)
    rule.observe(INLINE_BELOW_MS, 1)
    assert not rule.inline_for(1)


@pytest.mark.parametrize(
    "arguments",
    [{"below_ms": 0.0}, {"settle": 0}, {"smoothing": 0.0}, {"smoothing": 1.5}],
)
def test_nonsense_settings_are_refused(arguments: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        InlineRule(**arguments)  # type: ignore[arg-type]


@given(
    st.lists(
        st.tuples(st.floats(0, 1e4), st.integers(1, 10**6)), min_size=1, max_size=200
    ),
    st.integers(0, 10**6),
)
def test_the_means_stay_within_what_was_seen(
    batches: list[tuple[float, int]], elements: int
) -> None:
    rule = InlineRule()
    for model_ms, size in batches:
        rule.observe(model_ms, size)
    times = [model_ms for model_ms, _ in batches]
    per_element = [model_ms / size for model_ms, size in batches]
    assert min(times) - 1e-9 <= rule.mean_ms <= max(times) + 1e-9
    assert min(per_element) * (1 - 1e-9) <= rule.mean_ms_per_element
    assert rule.mean_ms_per_element <= max(per_element) * (1 + 1e-9)
    assert rule.batches == len(batches)
    assert rule.inline_for(elements) == (
        len(batches) >= 16
        and rule.mean_ms < INLINE_BELOW_MS
        and rule.mean_ms_per_element * elements < INLINE_BELOW_MS
    )


class ThreadNoting:
    """A runtime that records which thread ran each batch."""

    def __init__(self, provider: str, sleep_s: float = 0.0) -> None:
        self._device = Device(provider, False)
        self.sleep_s = sleep_s
        self.threads: list[threading.Thread] = []

    @property
    def device(self) -> Device:
        return self._device

    def predict(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.threads.append(threading.current_thread())
        if self.sleep_s:
            time.sleep(self.sleep_s)
        return {"y": inputs["x"] * 2}


def run_requests(runtime: ThreadNoting, count: int) -> None:
    async def scenario() -> None:
        runner = VersionRunner(
            "m", "v1", runtime, SIGNATURE, BatchingSpec(max_batch_size=1)
        )
        try:
            for i in range(count):
                x = np.full((1, 2), i, dtype=np.float32)
                result = await runner.infer({"x": x})
                np.testing.assert_array_equal(result.outputs["y"], x * 2)
        finally:
            runner.close()

    asyncio.run(scenario())


def test_a_fast_onnx_model_on_cpu_moves_onto_the_event_loop() -> None:
    runtime = ThreadNoting(CPU)
    run_requests(runtime, 20)
    loop_thread = threading.main_thread()
    assert all(t is not loop_thread for t in runtime.threads[:16])
    assert all(t is loop_thread for t in runtime.threads[16:])


def test_a_slow_model_stays_in_the_thread() -> None:
    runtime = ThreadNoting(CPU, sleep_s=0.002)
    run_requests(runtime, 20)
    assert threading.main_thread() not in runtime.threads


def test_a_python_model_always_runs_in_the_thread() -> None:
    runtime = ThreadNoting(PYTHON)
    run_requests(runtime, 20)
    assert threading.main_thread() not in runtime.threads
