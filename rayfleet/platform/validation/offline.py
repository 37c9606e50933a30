"""Pre-deploy validation: a candidate version against its baseline on a dataset.

No Ray: both runtimes load in this process (``load_runtime``) and predict the same
batches in turn. The report says whether the candidate agrees with the baseline,
is as accurate, is not much slower per batch, predicts the same mix of classes,
and, given reference data, whether the dataset looks like it.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Mapping
from typing import ClassVar

import numpy as np
from pydantic import Field

from rayfleet.platform.config.base import Spec
from rayfleet.platform.runtimes.base import Runtime
from rayfleet.platform.thresholds import Bound, GateResult, Verdict
from rayfleet.platform.validation.agreement import agreement_mask
from rayfleet.platform.validation.drift import (
    DriftReport,
    chi_square,
    feature_drift,
    jensen_shannon,
    psi,
)
from rayfleet.platform.validation.observation import batch_predictions, summarize_batch
from rayfleet.platform.validation.report import OfflineReport, RunSummary

__all__ = ["OfflineGates", "judge_candidate", "validate_offline"]


class OfflineGates(Spec):
    """Thresholds an offline validation must meet.

    Fields and gates share the live rollout's names
    (:data:`~rayfleet.platform.thresholds.GATE_NAMES`); the latency is model time,
    both models timed per batch in this process. The latency gate is generous
    (2x) because both run on shared CPUs, where scheduling noise easily moves a
    p99 by half; it is for catching a candidate that is several times slower,
    not 20%.
    """

    # Renamed in 0.2.0 to the live gates' names; the old keys are read until
    # REMOVED_IN (config.base).
    RENAMED_KEYS: ClassVar[Mapping[str, str]] = {
        "max_p99_latency_ratio": "max_model_p99_ratio",
        "max_input_drifted_share": "max_input_drift_share",
    }

    min_agreement: float = Field(
        default=0.9, ge=0, le=1, description="share of rows predicted alike"
    )
    max_accuracy_drop: float = Field(
        default=0.02,
        ge=0,
        le=1,
        description="baseline accuracy minus candidate accuracy (needs labels)",
    )
    max_model_p99_ratio: float = Field(
        default=2.0, gt=0, description="candidate p99 per batch over baseline's"
    )
    latency_floor_ms: float = Field(
        default=1.0,
        ge=0,
        description=(
            "a candidate p99 per batch at or under this passes the latency gate "
            "whatever the ratio: sub-millisecond differences vanish behind the "
            "milliseconds a Ray hop costs when serving"
        ),
    )
    max_prediction_js: float = Field(
        default=0.1,
        ge=0,
        le=1,
        description="Jensen-Shannon divergence (bits) of predicted-class shares",
    )
    max_prediction_psi: float = Field(
        default=0.25, ge=0, description="PSI of predicted values, for regressors"
    )
    max_input_drift_share: float = Field(
        default=0.25,
        ge=0,
        le=1,
        description="share of features drifted from the reference (needs one)",
    )
    alpha: float = Field(
        default=0.05, gt=0, lt=1, description="family-wise level of the drift test"
    )


def validate_offline(
    candidate: Runtime,
    baseline: Runtime,
    inputs: np.ndarray | Mapping[str, np.ndarray],
    labels: np.ndarray | None,
    *,
    input_name: str,
    batch_size: int = 64,
    gates: OfflineGates,
    progress: Callable[[int, int], None] | None = None,
    reference: Mapping[str, np.ndarray] | None = None,
    timing_repeats: int = 3,
    tolerance: float = 1e-3,
    candidate_name: str = "candidate",
    baseline_name: str = "baseline",
) -> OfflineReport:
    """Run both runtimes over ``inputs`` in batches and judge the candidate.

    ``inputs`` is one array, fed as ``input_name``, or every input by name.
    ``labels`` (one per row) enable the accuracy gate; ``reference`` (feature
    columns ``f0, f1, ...``, see ``reference_features``) the input-drift gate.
    ``progress(done_rows, total_rows)`` is called after each batch.

    Both runtimes first predict the first batch untimed, to warm up. Then each
    batch is timed ``timing_repeats`` times per runtime, keeping the fastest: the
    minimum is the least noisy estimate of what the model costs. The runtimes
    alternate which goes first, so neither always finds the cache warm.
    Predictions agree as :func:`predictions_agree` says, with ``tolerance``.
    """
    arrays = {input_name: inputs} if isinstance(inputs, np.ndarray) else dict(inputs)
    if input_name not in arrays:
        raise ValueError(f"no input {input_name!r} among {sorted(arrays)}")
    rows = int(np.asarray(arrays[input_name]).shape[0])
    if any(np.asarray(a).shape[:1] != (rows,) for a in arrays.values()):
        raise ValueError("every input needs the same number of rows")
    if labels is not None and np.asarray(labels).shape[:1] != (rows,):
        raise ValueError(f"labels need one per row ({rows})")
    if rows == 0 or batch_size < 1 or timing_repeats < 1:
        raise ValueError("need rows, batch_size >= 1 and timing_repeats >= 1")

    runs = _run(
        {"candidate": candidate, "baseline": baseline},
        arrays,
        rows,
        batch_size,
        timing_repeats,
        progress,
    )
    (cand, cand_ms), (base, base_ms) = runs["candidate"], runs["baseline"]
    truth = None if labels is None else np.asarray(labels, dtype=np.float64)
    # Whole numbers on both sides are class ids, as predictions_agree reads them.
    categorical = bool(
        np.all(cand == np.round(cand)) and np.all(base == np.round(base))
    )
    cand_run = _summary(candidate_name, cand, truth, cand_ms, categorical, tolerance)
    base_run = _summary(baseline_name, base, truth, base_ms, categorical, tolerance)
    return judge_candidate(
        gates,
        candidate=cand_run,
        baseline=base_run,
        agreement=float(np.mean(agreement_mask(cand, base, tolerance))),
        rows=rows,
        batch_size=batch_size,
        predicted_values=None if categorical else (base, cand),
        input_drift=_input_drift(arrays, reference, gates.alpha),
    )


def judge_candidate(
    gates: OfflineGates,
    *,
    candidate: RunSummary,
    baseline: RunSummary,
    agreement: float,
    rows: int,
    batch_size: int,
    predicted_values: tuple[np.ndarray, np.ndarray] | None,
    input_drift: DriftReport | None,
) -> OfflineReport:
    """The report on a candidate against its baseline, every gate checked.

    ``agreement`` is the share of the ``rows`` (scored in batches of
    ``batch_size``) that both predicted alike. Without ``predicted_values`` the
    models are classifiers, judged on the Jensen-Shannon divergence of their
    runs' ``classes``; with them, regressors, judged on the PSI of the
    baseline's values against the candidate's (all of them, or a sample).
    ``input_drift`` adds the input-drift gate.

    :func:`validate_offline` and batch comparisons
    (:func:`rayfleet.platform.scoring.comparison_report`) both judge here, so a
    batch comparison passes and fails exactly as ``rayfleet validate`` does.
    """
    js = pvalue = value_psi = None
    if predicted_values is None:
        js = jensen_shannon(baseline.classes, candidate.classes)
        pvalue = chi_square(baseline.classes, candidate.classes)[1]
    else:
        value_psi = psi(*predicted_values)
    p99_ratio = _ratio(candidate.p99_ms, baseline.p99_ms)
    checks = _gates(
        gates,
        agreement=agreement,
        candidate=candidate,
        baseline=baseline,
        p99_ratio=p99_ratio,
        js=js,
        value_psi=value_psi,
        input_drift=input_drift,
    )
    failures = [check.describe() for check in checks if check.verdict is Verdict.FAIL]
    return OfflineReport(
        passed=not failures,
        failures=failures,
        gates=checks,
        rows=rows,
        batch_size=batch_size,
        candidate=candidate,
        baseline=baseline,
        agreement=agreement,
        model_p50_ratio=_ratio(candidate.p50_ms, baseline.p50_ms),
        model_p99_ratio=p99_ratio,
        prediction_js=js,
        prediction_chi_square_pvalue=pvalue,
        prediction_psi=value_psi,
        input_drift=input_drift,
    )


def _run(
    runtimes: Mapping[str, Runtime],
    arrays: Mapping[str, np.ndarray],
    rows: int,
    batch_size: int,
    repeats: int,
    progress: Callable[[int, int], None] | None,
) -> dict[str, tuple[np.ndarray, list[float]]]:
    """Each runtime's predictions on every row and its time per batch in ms,
    by the runtime's key in ``runtimes``."""
    first = {name: np.asarray(a)[:batch_size] for name, a in arrays.items()}
    for runtime in runtimes.values():
        runtime.predict(first)
    timings: dict[str, list[float]] = {name: [] for name in runtimes}
    predictions: dict[str, list[np.ndarray]] = {name: [] for name in runtimes}
    for number, start in enumerate(range(0, rows, batch_size)):
        batch = {
            name: np.asarray(a)[start : start + batch_size]
            for name, a in arrays.items()
        }
        order = list(runtimes) if number % 2 == 0 else list(runtimes)[::-1]
        for name in order:
            outputs, elapsed = _timed(runtimes[name], batch, repeats)
            classes, _ = batch_predictions(outputs)
            if classes is None:
                raise ValueError(f"the {name}'s outputs hold no prediction")
            timings[name].append(elapsed)
            predictions[name].append(classes)
        if progress is not None:
            progress(min(start + batch_size, rows), rows)
    return {
        name: (np.concatenate(predictions[name]), timings[name]) for name in runtimes
    }


def _ratio(candidate: float, baseline: float) -> float | None:
    return candidate / baseline if baseline > 0 else None


def _timed(
    runtime: Runtime, batch: Mapping[str, np.ndarray], repeats: int
) -> tuple[dict[str, np.ndarray], float]:
    """The runtime's outputs on ``batch`` and its fastest time in ms."""
    outputs: dict[str, np.ndarray] | None = None
    best = float("inf")
    for _ in range(repeats):
        began = time.perf_counter()
        result = runtime.predict(batch)
        best = min(best, (time.perf_counter() - began) * 1000)
        outputs = result if outputs is None else outputs
    assert outputs is not None
    return outputs, best


def _summary(
    name: str,
    values: np.ndarray,
    truth: np.ndarray | None,
    timings: list[float],
    categorical: bool,
    tolerance: float,
) -> RunSummary:
    accuracy = None
    if truth is not None:
        accuracy = float(np.mean(agreement_mask(values, truth, tolerance)))
    latency = np.asarray(timings)
    classes = dict(Counter(int(v) for v in values)) if categorical else {}
    return RunSummary(
        name=name,
        accuracy=accuracy,
        p50_ms=float(np.percentile(latency, 50)),
        p99_ms=float(np.percentile(latency, 99)),
        mean_ms=float(latency.mean()),
        batches=latency.size,
        classes=classes,
    )


def _input_drift(
    arrays: Mapping[str, np.ndarray],
    reference: Mapping[str, np.ndarray] | None,
    alpha: float,
) -> DriftReport | None:
    if reference is None:
        return None
    summary = summarize_batch(arrays, max_features=max(len(reference), 1))
    if summary is None:
        return None
    current = {f"f{i}": summary[:, i] for i in range(summary.shape[1])}
    if not any(name in current for name in reference):
        return None
    return feature_drift(reference, current, alpha)


def _gates(
    gates: OfflineGates,
    *,
    agreement: float,
    candidate: RunSummary,
    baseline: RunSummary,
    p99_ratio: float | None,
    js: float | None,
    value_psi: float | None,
    input_drift: DriftReport | None,
) -> tuple[GateResult, ...]:
    checks = [_decided("agreement", agreement, gates.min_agreement, "min")]
    if candidate.accuracy is not None and baseline.accuracy is not None:
        drop = baseline.accuracy - candidate.accuracy
        checks.append(_decided("accuracy_drop", drop, gates.max_accuracy_drop))
    limit = gates.max_model_p99_ratio
    if candidate.p99_ms <= gates.latency_floor_ms:
        detail = (
            f"candidate p99 {candidate.p99_ms:.3g} ms is under the "
            f"{gates.latency_floor_ms:g} ms floor"
        )
        checks.append(
            GateResult("model_p99_ratio", p99_ratio, limit, "max", Verdict.PASS, detail)
        )
    else:
        checks.append(_decided("model_p99_ratio", p99_ratio, limit))
    if js is not None:
        checks.append(_decided("prediction_js", js, gates.max_prediction_js))
    if value_psi is not None:
        limit = gates.max_prediction_psi
        checks.append(_decided("prediction_psi", value_psi, limit))
    if input_drift is not None:
        share, limit = input_drift.drifted_share, gates.max_input_drift_share
        checks.append(_decided("input_drift_share", share, limit))
    return tuple(checks)


def _decided(
    name: str, value: float | None, limit: float, bound: Bound = "max"
) -> GateResult:
    """An offline gate passes or fails: the dataset is all the data there is.

    A value that cannot be measured (a baseline timed at 0 ms) fails.
    """
    if value is None:
        return GateResult(name, None, limit, bound, Verdict.FAIL, "not measurable")
    ok = value <= limit if bound == "max" else value >= limit
    return GateResult(name, value, limit, bound, Verdict.PASS if ok else Verdict.FAIL)
