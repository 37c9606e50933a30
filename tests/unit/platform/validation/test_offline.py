"""Offline validation on the real demo models: v2 may replace v1, v3 may not."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from rayfleet.cli.demo import build_demo_store, digits_split
from rayfleet.platform.config.spec import VersionSpec
from rayfleet.platform.config.store import ModelStore
from rayfleet.platform.runtimes import Runtime, load_runtime
from rayfleet.platform.thresholds import GATE_NAMES, Verdict
from rayfleet.platform.validation.compare import reference_features
from rayfleet.platform.validation.offline import OfflineGates, validate_offline


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ModelStore]:
    root = tmp_path_factory.mktemp("store")
    build_demo_store(str(root))
    yield ModelStore(str(root))


@pytest.fixture(scope="module")
def runtimes(store: ModelStore) -> dict[str, Runtime]:
    return {
        version: load_runtime(
            store.manifest("digits", version),
            Path(store.fetch("digits", version)),
            VersionSpec(name=version),
            model="digits",
        )
        for version in ("v1", "v2", "v3")
    }


@pytest.fixture(scope="module")
def test_split() -> tuple[np.ndarray, np.ndarray]:
    _, x_test, _, y_test = digits_split()
    return x_test, y_test


def test_a_better_model_passes(
    runtimes: dict[str, Runtime],
    store: ModelStore,
    test_split: tuple[np.ndarray, np.ndarray],
) -> None:
    x, y = test_split
    table = store.reference("digits", "v1")
    assert table is not None
    seen: list[tuple[int, int]] = []
    report = validate_offline(
        runtimes["v2"],
        runtimes["v1"],
        x,
        y,
        input_name="input",
        gates=OfflineGates(),
        progress=lambda done, total: seen.append((done, total)),
        reference=reference_features(table),
        candidate_name="v2",
        baseline_name="v1",
    )
    assert report.passed, report.failures
    assert report.failures == []
    assert seen[-1] == (len(x), len(x)) and len(seen) == report.candidate.batches
    assert report.agreement > 0.9
    assert (
        report.candidate.accuracy is not None and report.baseline.accuracy is not None
    )
    assert report.candidate.accuracy >= report.baseline.accuracy - 0.02
    assert report.prediction_js is not None and report.prediction_js < 0.1
    assert report.input_drift is not None and not report.input_drift.drifted
    assert sum(report.candidate.classes.values()) == len(x)
    payload = json.loads(json.dumps(report.to_dict()))
    assert payload["passed"] is True and payload["candidate"]["name"] == "v2"
    page = report.to_html()
    assert "PASSED" in page and "Predicted classes" in page


def test_a_much_worse_model_fails(
    runtimes: dict[str, Runtime], test_split: tuple[np.ndarray, np.ndarray]
) -> None:
    x, y = test_split
    report = validate_offline(
        runtimes["v3"],
        runtimes["v1"],
        {"input": x},
        y,
        input_name="input",
        batch_size=100,
        gates=OfflineGates(),
    )
    assert not report.passed
    failed = {gate.name for gate in report.gates if not gate.passed}
    assert {"agreement", "accuracy_drop"} <= failed
    assert any(text.startswith("agreement") for text in report.failures)
    assert report.agreement < 0.6 and report.rows == len(x)
    page = report.to_html()
    assert "FAILED" in page and 'class="fail"' in page


def test_without_labels_there_is_no_accuracy_gate(
    runtimes: dict[str, Runtime], test_split: tuple[np.ndarray, np.ndarray]
) -> None:
    x, _ = test_split
    report = validate_offline(
        runtimes["v1"],
        runtimes["v1"],
        x[:100],
        None,
        input_name="input",
        gates=OfflineGates(),
        timing_repeats=1,
    )
    assert report.agreement == 1.0 and report.prediction_js == 0.0
    assert "accuracy_drop" not in {gate.name for gate in report.gates}
    assert report.candidate.accuracy is None


class _Regressor:
    def __init__(self, offset: float) -> None:
        self.offset = offset

    def predict(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {"value": inputs["x"].sum(axis=1) + self.offset}


def test_regressors_are_judged_by_psi_and_tolerance() -> None:
    x = np.random.default_rng(0).normal(size=(300, 4))
    report = validate_offline(
        _Regressor(0.0),
        _Regressor(0.0),
        x,
        x.sum(axis=1),
        input_name="x",
        gates=OfflineGates(),
    )
    assert report.passed and report.prediction_psi == 0.0
    assert report.candidate.accuracy == 1.0 and report.candidate.classes == {}
    shifted = validate_offline(
        _Regressor(3.0), _Regressor(0.0), x, None, input_name="x", gates=OfflineGates()
    )
    assert not shifted.passed and shifted.agreement == 0.0
    assert {g.name for g in shifted.gates if not g.passed} == {
        "agreement",
        "prediction_psi",
    }


def test_bad_arguments(runtimes: dict[str, Runtime]) -> None:
    x = np.zeros((10, 64), dtype=np.float32)
    with pytest.raises(ValueError, match="no input"):
        validate_offline(
            runtimes["v1"],
            runtimes["v1"],
            {"x": x},
            None,
            input_name="input",
            gates=OfflineGates(),
        )
    with pytest.raises(ValueError, match="one per row"):
        validate_offline(
            runtimes["v1"],
            runtimes["v1"],
            x,
            np.zeros(3),
            input_name="input",
            gates=OfflineGates(),
        )
    with pytest.raises(ValidationError):
        OfflineGates(min_agreement=2)
    with pytest.raises(ValidationError):
        OfflineGates(max_agreement=0.5)  # type: ignore[call-arg]


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("max_p99_latency_ratio", "max_model_p99_ratio"),
        ("max_input_drifted_share", "max_input_drift_share"),
    ],
)
def test_renamed_gate_keys_are_read_with_a_warning(old: str, new: str) -> None:
    # The live rollout's names; the old ones are read until 0.3.0.
    with pytest.warns(FutureWarning, match=f"'{old}' .* is now '{new}'"):
        gates = OfflineGates.model_validate({old: 0.5})
    assert gates == OfflineGates.model_validate({new: 0.5})
    with pytest.raises(ValidationError, match=f"give only '{new}'"):
        OfflineGates.model_validate({old: 0.5, new: 0.5})


def test_offline_gates_speak_the_rollout_vocabulary(
    runtimes: dict[str, Runtime], test_split: tuple[np.ndarray, np.ndarray]
) -> None:
    x, y = test_split
    rng = np.random.default_rng(0)
    reference = {f"f{i}": rng.normal(size=200) for i in range(4)}
    report = validate_offline(
        runtimes["v3"],
        runtimes["v1"],
        x[:100],
        y[:100],
        input_name="input",
        gates=OfflineGates(),
        reference=reference,
        timing_repeats=1,
    )
    names = [gate.name for gate in report.gates]
    assert names == [
        "agreement",
        "accuracy_drop",
        "model_p99_ratio",
        "prediction_js",
        "input_drift_share",
    ]
    assert set(names) <= set(GATE_NAMES)
    assert {gate.verdict for gate in report.gates} <= {Verdict.PASS, Verdict.FAIL}
