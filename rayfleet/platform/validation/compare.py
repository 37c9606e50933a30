"""A canary against the stable version on one window: what rollout gates read.

:func:`compare` turns two :class:`VersionStats` (same traffic window) and the
canary's reference data into a :class:`Comparison`: request counts, error rates,
end-to-end latency ratios, prediction drift canary against stable, input drift
against the reference, and agreement on shadow requests.

Features are matched by position: the ``i``-th value of an observation's feature
summary and the ``i``-th feature column of ``reference.parquet`` are both called
``f{i}`` (:func:`reference_features` renames the columns, e.g. ``pixel_i`` to
``f{i}``). A name-based match would need the router to know column names it never
sees; position is what both sides share, given the table keeps the model's input
order, as ``rayfleet.cli.demo`` writes it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pyarrow as pa

from rayfleet.platform.validation._json import json_float
from rayfleet.platform.validation.agreement import Agreement
from rayfleet.platform.validation.drift import (
    DriftReport,
    chi_square,
    feature_drift,
    jensen_shannon,
    psi,
)
from rayfleet.platform.validation.sketch import LatencySketch
from rayfleet.platform.validation.window import VersionStats, VersionSummary

__all__ = [
    "NON_FEATURE_COLUMNS",
    "Comparison",
    "PredictionDrift",
    "compare",
    "prediction_drift",
    "reference_features",
]

# Columns of reference.parquet that describe the model's answers, not its inputs.
NON_FEATURE_COLUMNS = frozenset({"target", "prediction", "confidence"})


def reference_features(
    table: pa.Table, feature_names: Sequence[str] | None = None
) -> dict[str, np.ndarray]:
    """The feature columns of a reference table, renamed ``f0, f1, ...`` in order.

    Without ``feature_names``, every column except ``target``, ``prediction`` and
    ``confidence``, in table order; with them, those columns in that order. Values
    become float64, nulls NaN.
    """
    names = (
        [name for name in table.column_names if name not in NON_FEATURE_COLUMNS]
        if feature_names is None
        else list(feature_names)
    )
    missing = [name for name in names if name not in table.column_names]
    if missing:
        raise KeyError(f"reference table has no column(s) {missing}")
    columns = {}
    for index, name in enumerate(names):
        column = table.column(name).cast(pa.float64()).fill_null(float("nan"))
        columns[f"f{index}"] = column.to_numpy()
    return columns


@dataclass(frozen=True)
class PredictionDrift:
    """How the canary's predictions differ from stable's on the same window.

    ``categorical`` (class ids): Jensen-Shannon divergence in bits and the
    chi-square test of the class counts. ``numeric`` (a regressor): PSI of the
    canary's sampled predictions against stable's.
    """

    kind: Literal["categorical", "numeric"]
    js: float | None = None
    chi_square: float | None = None
    pvalue: float | None = None
    psi: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dict."""
        return {
            "kind": self.kind,
            "js": json_float(self.js),
            "chi_square": json_float(self.chi_square),
            "pvalue": json_float(self.pvalue),
            "psi": json_float(self.psi),
        }


def prediction_drift(
    stable: VersionStats, canary: VersionStats
) -> PredictionDrift | None:
    """Prediction drift canary against stable; ``None`` without predictions on both.

    Categorical when both versions predicted only whole numbers (class ids),
    numeric otherwise.
    """
    if stable.categorical and canary.categorical:
        if not (stable.classes and canary.classes):
            return None
        statistic, pvalue = chi_square(stable.classes, canary.classes)
        js = jensen_shannon(stable.classes, canary.classes)
        return PredictionDrift(
            "categorical", js=js, chi_square=statistic, pvalue=pvalue
        )
    stable_values, canary_values = (
        stable.prediction_values(),
        canary.prediction_values(),
    )
    if stable_values.size == 0 or canary_values.size == 0:
        return None
    return PredictionDrift("numeric", psi=psi(stable_values, canary_values))


def _ratio(canary: float | None, stable: float | None) -> float | None:
    if canary is None or stable is None or stable <= 0:
        return None
    return canary / stable


@dataclass(frozen=True)
class Comparison:
    """Canary against stable over one traffic window.

    Ratios are canary / stable (``None`` when either side has no value) of the
    end-to-end latency at the router (``e2e_``; the gates judge model time, from
    the summaries' ``model_p50_ms``) and the error-rate delta is canary minus
    stable. ``input_drift`` compares the canary's
    sampled features with its reference data at ``alpha`` (Bonferroni over
    features); ``None`` without reference data, samples, or shared features.
    ``agreement`` is the agreement on shadow pairs, when requests were shadowed.
    ``*_latency`` (end to end) and ``*_model_latency`` are the versions' sketches
    behind the percentiles, from which the latency gates take confidence bounds;
    they are not part of :meth:`to_dict`.
    """

    stable: VersionSummary
    canary: VersionSummary
    error_rate_delta: float | None
    e2e_p50_ratio: float | None
    e2e_p99_ratio: float | None
    prediction_drift: PredictionDrift | None
    input_drift: DriftReport | None
    agreement: Agreement | None
    alpha: float
    stable_latency: LatencySketch = field(repr=False, compare=False)
    canary_latency: LatencySketch = field(repr=False, compare=False)
    stable_model_latency: LatencySketch = field(repr=False, compare=False)
    canary_model_latency: LatencySketch = field(repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dict, as ``/-/validation`` serves it."""
        drift = self.prediction_drift
        return {
            "stable": self.stable.to_dict(),
            "canary": self.canary.to_dict(),
            "error_rate_delta": json_float(self.error_rate_delta),
            "e2e_p50_ratio": json_float(self.e2e_p50_ratio),
            "e2e_p99_ratio": json_float(self.e2e_p99_ratio),
            "prediction_drift": None if drift is None else drift.to_dict(),
            "input_drift": None
            if self.input_drift is None
            else self.input_drift.to_dict(),
            "agreement": None if self.agreement is None else self.agreement.to_dict(),
            "alpha": self.alpha,
        }


def compare(
    stable: VersionStats,
    canary: VersionStats,
    reference: Mapping[str, np.ndarray] | None,
    *,
    alpha: float,
    agreement: Agreement | None = None,
) -> Comparison:
    """Compare ``canary`` with ``stable`` over the same window.

    ``reference`` holds the canary version's reference features (see
    :func:`reference_features`); ``agreement`` the shadow pairing counts, if any.
    """
    stable_summary, canary_summary = stable.summary(), canary.summary()
    delta = None
    if stable_summary.error_rate is not None and canary_summary.error_rate is not None:
        delta = canary_summary.error_rate - stable_summary.error_rate
    input_drift = None
    if reference is not None:
        current = canary.feature_columns()
        if any(name in current for name in reference):
            input_drift = feature_drift(reference, current, alpha)
    return Comparison(
        stable=stable_summary,
        canary=canary_summary,
        error_rate_delta=delta,
        e2e_p50_ratio=_ratio(canary_summary.p50_ms, stable_summary.p50_ms),
        e2e_p99_ratio=_ratio(canary_summary.p99_ms, stable_summary.p99_ms),
        prediction_drift=prediction_drift(stable, canary),
        input_drift=input_drift,
        agreement=agreement,
        alpha=alpha,
        stable_latency=stable.latency,
        canary_latency=canary.latency,
        stable_model_latency=stable.model_latency,
        canary_model_latency=canary.model_latency,
    )
