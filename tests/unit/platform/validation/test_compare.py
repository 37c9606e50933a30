from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pytest

from rayfleet.platform.validation.agreement import Agreement
from rayfleet.platform.validation.compare import compare, reference_features
from rayfleet.platform.validation.observation import Observation, summarize_inputs
from rayfleet.platform.validation.window import VersionStats


def _stats(
    rng: np.random.Generator,
    *,
    latency: float,
    errors: int,
    classes: list[int] | None = None,
    shift: float = 0.0,
    values: bool = False,
) -> VersionStats:
    stats = VersionStats(seed=int(rng.integers(1 << 30)))
    labels = classes or [0, 1, 2]
    offsets = np.array([shift, 0.0, 0.0])  # only the first feature moves
    for index in range(1000):
        status = 500 if index < errors else 200
        prediction = (
            float(rng.normal(10 + shift)) if values else float(rng.choice(labels))
        )
        features = tuple(float(v) for v in rng.normal(size=3) + offsets)
        stats.add(
            Observation(
                "m",
                "v",
                float(index),
                float(rng.lognormal(np.log(latency), 0.3)),
                1.0,
                status,
                features,
                prediction,
                0.8,
            )
        )
    return stats


def test_reference_features_by_position() -> None:
    table = pa.table(
        {
            "pixel_0": pa.array([1.0, 2.0], pa.float32()),
            "pixel_1": [3, None],
            "target": [0, 1],
            "prediction": [0, 1],
            "confidence": [0.9, 0.8],
        }
    )
    columns = reference_features(table)
    assert list(columns) == ["f0", "f1"]
    assert columns["f0"].tolist() == [1.0, 2.0] and np.isnan(columns["f1"][1])
    # Named columns keep the given order.
    assert reference_features(table, ["pixel_1", "pixel_0"])["f1"].tolist() == [1, 2]
    with pytest.raises(KeyError, match="pixel_9"):
        reference_features(table, ["pixel_9"])


def test_reference_and_summaries_share_feature_names() -> None:
    rows = np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    table = pa.table({f"pixel_{i}": rows[:, i] for i in range(3)})
    reference = reference_features(table)
    summary = summarize_inputs({"input": rows[1:]})
    assert summary == tuple(reference[f"f{i}"][1] for i in range(3))


def test_a_good_canary() -> None:
    rng = np.random.default_rng(1)
    stable = _stats(rng, latency=20, errors=10)
    canary = _stats(rng, latency=20, errors=12)
    reference = {f"f{i}": rng.normal(size=500) for i in range(3)}
    agreement = Agreement(pairs=100, agreeing=97, failed_pairs=0, evicted=0)
    result = compare(stable, canary, reference, alpha=0.05, agreement=agreement)
    assert result.canary.requests == result.stable.requests == 1000
    assert result.error_rate_delta == pytest.approx(0.002)
    assert result.e2e_p50_ratio == pytest.approx(1, abs=0.1)
    assert result.e2e_p99_ratio == pytest.approx(1, abs=0.3)
    drift = result.prediction_drift
    assert drift is not None and drift.kind == "categorical"
    assert drift.js is not None and drift.js < 0.01
    assert drift.pvalue is not None and drift.pvalue > 0.001
    assert result.input_drift is not None and not result.input_drift.drifted
    payload = json.loads(json.dumps(result.to_dict()))
    assert payload["agreement"]["rate"] == 0.97
    assert len(payload["input_drift"]["features"]) == 3


def test_a_bad_canary() -> None:
    rng = np.random.default_rng(2)
    stable = _stats(rng, latency=20, errors=0)
    canary = _stats(rng, latency=60, errors=100, classes=[0, 0, 0, 1], shift=1.0)
    reference = {f"f{i}": rng.normal(size=500) for i in range(3)}
    result = compare(stable, canary, reference, alpha=0.05)
    assert result.error_rate_delta == pytest.approx(0.1)
    assert result.e2e_p50_ratio == pytest.approx(3, rel=0.1)
    drift = result.prediction_drift
    assert drift is not None and drift.js is not None and drift.js > 0.1
    assert drift.pvalue is not None and drift.pvalue < 1e-6
    assert result.input_drift is not None
    assert result.input_drift.drifted_features == ("f0",)
    assert result.agreement is None


def test_regression_outputs_use_psi() -> None:
    rng = np.random.default_rng(3)
    stable = _stats(rng, latency=20, errors=0, values=True)
    canary = _stats(rng, latency=20, errors=0, values=True, shift=2.0)
    drift = compare(stable, canary, None, alpha=0.05).prediction_drift
    assert drift is not None and drift.kind == "numeric" and drift.js is None
    assert drift.psi is not None and drift.psi > 0.25


def test_nothing_to_compare_yet() -> None:
    empty = VersionStats()
    result = compare(empty, VersionStats(), {"f0": np.ones(3)}, alpha=0.05)
    assert result.error_rate_delta is None and result.e2e_p99_ratio is None
    assert result.prediction_drift is None and result.input_drift is None
    payload = json.loads(json.dumps(result.to_dict()))
    assert payload["canary"]["p50_ms"] is None
