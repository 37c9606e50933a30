"""The rollout simulation on recorded latency: a small synthetic recording."""

from __future__ import annotations

from pathlib import Path
from typing import cast

import numpy as np
import pytest

from loadtest.latency_slices import (
    Bins,
    Run,
    Side,
    Slice,
    SliceSampler,
    read_recording,
    save_run,
)
from loadtest.sim_rollout import (
    IDENTICAL,
    SLOW,
    STABLE,
    LognormalLatency,
    RecordedLatency,
    main,
    recorded_scenarios,
    run_scenario,
    simulate,
)
from rayfleet.platform.config.rollout import RolloutSpec
from rayfleet.platform.rollout import Phase
from rayfleet.platform.validation.sketch import LatencySketch

ACCURACY = 0.01
RPS = 40
SLICE_S = 5.0
# Five 5 s slices at each of the default steps, after two of warm-up at 0%.
WEIGHTS = [0.0] * 2 + [5.0] * 5 + [25.0] * 5 + [50.0] * 5 + [100.0] * 5


def bins(values: np.ndarray) -> Bins:
    sketch = LatencySketch(ACCURACY)
    for value in values.tolist():
        sketch.add(value)
    return Bins.of_sketch(sketch.to_dict())


def side(rng: np.random.Generator, n: int, slower: float) -> Side:
    """``n`` requests of a heavy-tailed model time over a 2 ms median, ``slower``
    times that, and a 1 ms hop on top end to end."""
    model = slower * 2.0 * (1 + rng.pareto(3.0, n))
    return Side(n, bins(model + 1.0), bins(model))


def recorded(seed: int, slower: float) -> Run:
    """One synthetic trial: stable as is, the canary ``slower`` times slower."""
    rng = np.random.default_rng(seed)
    slices = []
    for weight in WEIGHTS:
        canary = round(RPS * SLICE_S * weight / 100)
        stable = round(RPS * SLICE_S) - canary
        slices.append(
            Slice(SLICE_S, weight, side(rng, stable, 1.0), side(rng, canary, slower))
        )
    return Run("v2", tuple(slices), recorded="2025-01-01T00:00:00Z")


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("data") / "latency_slices.json"
    save_run(path, "closed16", "good", recorded(1, 1.0), ACCURACY)
    save_run(path, "closed16", "good", recorded(2, 1.0), ACCURACY)
    save_run(path, "closed16", "slow", recorded(3, 3.0), ACCURACY)
    save_run(path, "closed16", "bad", recorded(4, 1.0), ACCURACY)
    return path


def test_recorded_scenarios_run_each_load_at_its_measured_rate(data: Path) -> None:
    scenarios = recorded_scenarios(read_recording(data), RolloutSpec(), block=6)
    assert [(s.name, s.good, s.rps) for s in scenarios] == [
        ("good canary, recorded closed16 (2 runs)", True, RPS),
        ("slow canary, recorded closed16 (1 runs)", False, RPS),
    ]
    assert (scenarios[0].canary, scenarios[1].canary) == (IDENTICAL, SLOW)


def test_an_identical_recorded_canary_is_promoted_a_3x_slower_one_rolled_back(
    data: Path,
) -> None:
    good, slow = recorded_scenarios(read_recording(data), RolloutSpec(), block=6)
    promoted = run_scenario(good, runs=4, seed=0, index=0)
    assert [o.phase for o in promoted] == [Phase.PROMOTED] * 4
    rolled_back = run_scenario(slow, runs=4, seed=0, index=1)
    assert [o.phase for o in rolled_back] == [Phase.ROLLED_BACK] * 4
    # Both latency ratios see model time 3x over its limits; the p50 proves it
    # first, on the first step's few hundred requests.
    assert all("model_p50_ratio" in o.failed_gates for o in rolled_back)
    assert all(o.canary_requests < 200 for o in rolled_back)


class FirstOfPool:
    """An rng for the sampler that always starts a block at its pool's first
    slice, and draws values as a seeded one does."""

    def __init__(self) -> None:
        self.rng = np.random.default_rng(0)

    def integers(self, high: int) -> int:
        return 0

    def random(self, n: int) -> np.ndarray:
        drawn: np.ndarray = self.rng.random(n)
        return drawn


def test_recorded_latency_draws_each_version_from_the_slice_it_replays() -> None:
    rng = np.random.default_rng(0)
    first = Slice(SLICE_S, 5.0, side(rng, 190, 1.0), side(rng, 10, 3.0))
    second = Slice(SLICE_S, 5.0, side(rng, 200, 1.0), Side())
    run = Run("v2", (first, second), recorded="2025-01-01T00:00:00Z")
    latency = RecordedLatency(SliceSampler([run], block=2), ACCURACY)
    start = cast(np.random.Generator, FirstOfPool())
    for replayed, canary in ((first, first.canary), (second, first.canary)):
        latency.next_interval(start, 5.0)
        stable_e2e, stable_model = latency.draw(start, False, 20_000)
        canary_e2e, canary_model = latency.draw(start, True, 20_000)
        # Rebinned, the draws fill exactly the bins they were drawn from; a
        # slice without canary requests lends those of its weight's slices.
        expected = (
            replayed.stable.e2e,
            replayed.stable.model,
            canary.e2e,
            canary.model,
        )
        for values, source in zip(
            (stable_e2e, stable_model, canary_e2e, canary_model), expected, strict=True
        ):
            assert len(values) == 20_000
            again = bins(values)
            assert again.first == source.first
            assert [c > 0 for c in again.counts] == [c > 0 for c in source.counts]


def test_lognormal_latency_gives_the_gates_sketches_to_fail_on() -> None:
    spec = RolloutSpec()
    rng = np.random.default_rng(0)
    slow = simulate(rng, spec, SLOW, 50, LognormalLatency(STABLE, SLOW))
    assert slow.phase is Phase.ROLLED_BACK
    assert "model_p50_ratio" in slow.failed_gates


def test_the_table_names_its_command_and_data(
    data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "none.json"
    main(["--runs", "1", "--data", str(missing)])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].endswith(f"--data {missing} --block 6 --horizon-s 1800")
    assert lines[1] == (
        f"latency data: {missing} is missing, so the recorded scenarios are "
        "skipped; record it with .venv/bin/python -m loadtest.rollout_trials "
        "--record"
    )
    scenarios = [line.split(" | ")[0] for line in lines if line.startswith("| ")]
    assert scenarios[1:] == [
        "| identical canary",
        "| bad canary (v3)",
        "| slow canary (3x latency)",
        "| good canary, 10% shadow first",
        "| bad canary (v3), 10% shadow first",
    ]

    main(["--runs", "1", "--data", str(data), "--block", "3", "--horizon-s", "600"])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == (
        "command: .venv/bin/python -m loadtest.sim_rollout --runs 1 --seed 0 "
        f"--rps 50 --data {data} --block 3 --horizon-s 600"
    )
    assert lines[1] == f"latency data: {data} (loads: closed16)"
    rows = [line for line in lines if "recorded closed16" in line]
    assert [row.split(" | ")[:6] for row in rows] == [
        ["| good canary, recorded closed16 (2 runs)", "40", "1", "1", "0", "0"],
        ["| slow canary, recorded closed16 (1 runs)", "40", "1", "0", "1", "0"],
    ]
