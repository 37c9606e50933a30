"""Recorded latency slices: bins from sketches, recording, the file, resampling."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import cast

import numpy as np
import pytest

from loadtest.latency_slices import (
    MAX_RUNS,
    Bins,
    Recorder,
    Run,
    Side,
    Slice,
    SliceSampler,
    read_recording,
    save_run,
)
from rayfleet.platform.config.rollout import RolloutSpec
from rayfleet.platform.config.spec import (
    ModelSpec,
    ObservationSpec,
    PlatformSpec,
    VersionSpec,
)
from rayfleet.platform.rollout.controller import ValidatorCore
from rayfleet.platform.rollout.state_store import MemoryStateStore
from rayfleet.platform.validation.observation import Observation
from rayfleet.platform.validation.sketch import LatencySketch
from tests.observations import ingest_rows

ACCURACY = 0.01


def sketch_of(values: np.ndarray) -> LatencySketch:
    sketch = LatencySketch(ACCURACY)
    for value in values.tolist():
        sketch.add(value)
    return sketch


def bins_of(values: np.ndarray) -> Bins:
    return Bins.of_sketch(sketch_of(values).to_dict())


# -- bins -------------------------------------------------------------------------


def test_bins_hold_a_sketchs_counts_and_its_bounds() -> None:
    values = np.array([0.0, 0.0, 1.0, 1.0, 1.0, 2.5, 40.0])
    sketch = sketch_of(values)
    bins = Bins.of_sketch(sketch.to_dict())
    assert (bins.zero, bins.count, bins.counts[0], bins.counts[-1]) == (2, 7, 3, 1)
    assert sum(1 for c in bins.counts if c) == 3
    lows, highs = bins.bounds(ACCURACY)
    # The bounds the sketch itself gives its values, bin by bin (it widens them
    # by 1e-9 and clips them to the exact maximum: 40.0).
    first, second, third = (i + 1 for i, c in enumerate(bins.counts) if c)
    assert sketch.rank_bounds(3) == pytest.approx((lows[first], highs[first]))
    assert sketch.rank_bounds(6) == pytest.approx((lows[second], highs[second]))
    assert sketch.rank_bounds(7) == pytest.approx((lows[third], 40.0))
    assert lows[third] < 40.0 < highs[third]
    assert Bins.from_json(json.loads(json.dumps(bins.to_json()))) == bins
    assert Bins.of_sketch(LatencySketch().to_dict()) == Bins()


def test_bins_subtract_and_add() -> None:
    early = bins_of(np.array([1.0, 2.0, 2.0]))
    late = bins_of(np.array([1.0, 2.0, 2.0, 0.5, 2.0, 9.0]))
    added = late.minus(early)
    assert added == bins_of(np.array([0.5, 2.0, 9.0]))
    assert added.plus(early) == late
    assert late.minus(Bins()) == late
    with pytest.raises(ValueError, match="shrank"):
        early.minus(late)


@pytest.mark.parametrize(
    "values",
    [
        np.random.default_rng(1).lognormal(np.log(8), 0.35, 20_000),
        # A heavy tail: a Pareto of index 1.5 over 0.2 ms, as queues make.
        0.2 * (1 + np.random.default_rng(2).pareto(1.5, 20_000)),
        # Two modes: most requests fast, a tenth behind a 40 ms stall.
        np.concatenate(
            [
                np.random.default_rng(3).lognormal(0, 0.2, 18_000),
                np.random.default_rng(4).lognormal(np.log(40), 0.1, 2_000),
            ]
        ),
    ],
)
def test_draws_reproduce_the_sketchs_quantiles(values: np.ndarray) -> None:
    """The draws' q-quantile lies within the sketch's own bounds (its relative
    accuracy) on the values ranked q * n, give or take five standard errors of
    the draws' quantile: a bin edge near that rank may fall either way."""
    sketch = sketch_of(values)
    bins = Bins.of_sketch(sketch.to_dict())
    draws = 400_000
    drawn = bins.draw(np.random.default_rng(0), draws, ACCURACY)
    n = sketch.count
    for q in (0.1, 0.5, 0.9, 0.99, 0.999):
        noise = 5 * math.sqrt(q * (1 - q) / draws)
        low = sketch.rank_bounds(max(1, math.floor((q - noise) * n)))[0]
        high = sketch.rank_bounds(min(n, math.ceil((q + noise) * n) + 1))[1]
        assert low <= float(np.quantile(drawn, q)) <= high, q


def test_draws_stay_inside_the_drawn_bins() -> None:
    bins = Bins(zero=1, first=100, counts=(3, 0, 5))
    drawn = bins.draw(np.random.default_rng(0), 10_000, ACCURACY)
    gamma = (1 + ACCURACY) / (1 - ACCURACY)
    inside = (
        (drawn == 0)
        | ((drawn >= gamma**99) & (drawn <= gamma**100))
        | ((drawn >= gamma**101) & (drawn <= gamma**102))
    )
    assert inside.all()
    # 1 in 9 of them zero, 3 in 9 in the first bin, 5 in 9 in the last.
    shares = [(drawn == 0).mean(), (drawn <= gamma**100).mean() - (drawn == 0).mean()]
    assert np.allclose(shares, [1 / 9, 3 / 9], atol=0.015)
    with pytest.raises(ValueError, match="empty"):
        Bins().draw(np.random.default_rng(0), 1, ACCURACY)


# -- recording --------------------------------------------------------------------


def core() -> ValidatorCore:
    digits = ModelSpec(
        name="digits",
        versions=(VersionSpec(name="v1"), VersionSpec(name="v2", canary=True)),
        rollout=RolloutSpec(steps=(10.0, 100.0)),
    )
    spec = PlatformSpec(
        store="memory://unused",
        observations=ObservationSpec(bucket_s=10.0, horizon_s=3600.0),
        models=(digits,),
    )
    return ValidatorCore(spec, "app", MemoryStateStore(), {}, now=1000.0)


def answer(validator: ValidatorCore, now: float) -> dict[str, object]:
    """What ``/-/validation?window_s=..&sketches=true`` answers, over HTTP."""
    body = validator.snapshot(now, 600.0)
    body["sketches"] = validator.latency_sketches(now, 600.0)
    loaded: dict[str, object] = json.loads(json.dumps(body))
    return loaded


def ingest(validator: ValidatorCore, version: str, ts: float, e2e: list[float]) -> None:
    ingest_rows(
        validator,
        [
            Observation("digits", version, ts, value, value / 2, 200).to_row()
            for value in e2e
        ],
    )


def test_the_recorder_slices_exactly_the_requests_between_answers() -> None:
    validator = core()
    recorder = Recorder("digits")
    ingest(validator, "v1", 1001.0, [3.0, 4.0])
    assert recorder.observe(answer(validator, 1002.0)) is None  # the start
    # Same bucket as before, a late one, and the next bucket: all in this slice.
    ingest(validator, "v1", 1001.5, [5.0, 30.0])
    ingest(validator, "v2", 1003.0, [7.0])
    ingest_rows(
        validator, [Observation("digits", "v2", 1003.5, 1.0, 0.5, 500).to_row()]
    )
    ingest(validator, "v1", 1011.0, [6.0])
    first = recorder.observe(answer(validator, 1012.0))
    assert first is not None
    assert (first.seconds, first.weight) == (10.0, 0.0)
    assert first.stable == Side(
        3,
        bins_of(np.array([5.0, 30.0, 6.0])),
        bins_of(np.array([2.5, 15.0, 3.0])),
    )
    # The error is a request, untimed.
    assert first.canary == Side(2, bins_of(np.array([7.0])), bins_of(np.array([3.5])))
    assert recorder.relative_accuracy == ACCURACY
    validator.tick(1013.0, {("digits", "v2"): True})
    second = recorder.observe(answer(validator, 1017.0))
    assert second == Slice(5.0, 0.0, Side(), Side())
    third = recorder.observe(answer(validator, 1022.0))
    assert third is not None and third.weight == 10.0  # the step began before it
    # Promoted, v2 is stable as well as the canary: nothing left to slice, and
    # no slice of v1 against v2's numbers (a real trial crashed on that).
    validator.act("digits", "promote", 1023.0)
    ingest(validator, "v2", 1024.0, [8.0])
    assert recorder.observe(answer(validator, 1027.0)) is None


def test_runs_accumulate_in_the_file_by_load_and_canary(tmp_path: Path) -> None:
    path = tmp_path / "data" / "slices.json"
    one = Slice(5.0, 5.0, Side(10, bins_of(np.array([1.0]))), Side())

    def run(version: str, slices: int) -> Run:
        return Run(version, (one,) * slices, recorded="2025-01-01T00:00:00Z")

    save_run(path, "closed16", "good", run("v2", 1), ACCURACY)
    save_run(path, "closed16", "slow", run("slow", 2), ACCURACY)
    save_run(path, "open20", "good", run("v2", 3), ACCURACY)
    save_run(path, "closed16", "good", run("v2", 4), ACCURACY)
    recording = read_recording(path)
    assert recording.relative_accuracy == ACCURACY
    assert {load: dict(c) for load, c in recording.loads.items()} == {
        "closed16": {"good": (run("v2", 1), run("v2", 4)), "slow": (run("slow", 2),)},
        "open20": {"good": (run("v2", 3),)},
    }
    assert recording.rps("closed16", "good") == 10 / 5.0
    assert recording.runs("closed64", "good") == ()
    for slices in range(MAX_RUNS):
        save_run(path, "open20", "good", run("v2", 10 + slices), ACCURACY)
    kept = read_recording(path).runs("open20", "good")
    assert [len(r.slices) for r in kept] == list(range(10, 10 + MAX_RUNS))
    assert list(tmp_path.joinpath("data").iterdir()) == [path]  # no temporary left
    with pytest.raises(ValueError, match="relative accuracy"):
        save_run(path, "open20", "good", run("v2", 1), 0.02)


# -- the block bootstrap ------------------------------------------------------------


def numbered(run: int, weights: list[float]) -> Run:
    """Slices told apart by their request counts: run * 100 + index."""
    return Run(
        "v2",
        tuple(
            Slice(5.0, weight, Side(run * 100 + i), Side(run * 100 + i))
            for i, weight in enumerate(weights)
        ),
    )


class FirstOfPool:
    """An rng that always starts a block at the pool's first slice."""

    def integers(self, high: int) -> int:
        return 0


def test_blocks_are_whole_slices_in_their_recorded_order() -> None:
    runs = [numbered(1, [0, 5, 5, 5, 5, 5, 5, 25]), numbered(2, [5, 5, 5, 5, 25])]
    recorded = {id(s) for r in runs for s in r.slices}
    sampler = SliceSampler(runs, block=3)
    rng = np.random.default_rng(0)
    drawn = [sampler.next(rng, 5.0) for _ in range(300)]
    assert all(id(s) in recorded for s in drawn)
    assert {s.stable.requests for s in drawn} == {
        *range(101, 107),
        *range(200, 204),
    }  # every slice at 5%, never the warm-up at 0 or the 25% ones

    first = cast(np.random.Generator, FirstOfPool())
    blocks = SliceSampler(runs, block=3)
    assert [blocks.next(first, 5.0).stable.requests for _ in range(7)] == [
        101,
        102,
        103,
        101,
        102,
        103,
        101,
    ]
    # A block ends early where its run's slices at the weight end.
    long = SliceSampler(runs, block=10)
    assert [long.next(first, 5.0).stable.requests for _ in range(8)] == [
        101,
        102,
        103,
        104,
        105,
        106,
        101,
        102,
    ]
    # A new weight starts a new block.
    assert long.next(first, 25.0).stable.requests == 107
    assert long.next(first, 5.0).stable.requests == 101


def test_slices_come_from_the_nearest_recorded_weight() -> None:
    sampler = SliceSampler([numbered(1, [0, 5, 5, 25, 25, 50])], block=2)
    rng = np.random.default_rng(0)
    assert {sampler.next(rng, 25.0).weight for _ in range(20)} == {25.0}
    assert {sampler.next(rng, 100.0).weight for _ in range(20)} == {50.0}
    assert sampler.nearest_weight(15.0) == 5.0  # a tie goes to the lower one
    assert sampler.merged(25.0)[0].requests == 103 + 104
    fresh = sampler.fresh()
    assert fresh.next(rng, 5.0).weight == 5.0
    with pytest.raises(ValueError, match="canary traffic"):
        SliceSampler([numbered(1, [0, 0])], block=2)
