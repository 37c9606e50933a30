"""The result of a pre-deploy (offline) validation, as data, JSON and an HTML page.

:func:`rayfleet.platform.validation.offline.validate_offline` builds an
:class:`OfflineReport`; this module only holds and renders it. The HTML page is
self-contained (inline CSS, no scripts, no external assets), so it can be
attached to a CI run or mailed as is.
"""

from __future__ import annotations

import html
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from rayfleet.platform.thresholds import GateResult, Verdict
from rayfleet.platform.validation._json import json_float
from rayfleet.platform.validation.drift import DriftReport

__all__ = ["OfflineReport", "RunSummary"]

# How many drift rows the HTML page lists, most shifted first.
_DRIFT_ROWS = 20


@dataclass(frozen=True)
class RunSummary:
    """One runtime over the dataset: accuracy, per-batch latency, its predictions.

    ``classes`` counts predicted class ids; empty for a regressor.
    """

    name: str
    accuracy: float | None
    p50_ms: float
    p99_ms: float
    mean_ms: float
    batches: int
    classes: Mapping[int, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dict; class ids become string keys, as JSON requires."""
        return {
            "name": self.name,
            "accuracy": json_float(self.accuracy),
            "p50_ms": json_float(self.p50_ms),
            "p99_ms": json_float(self.p99_ms),
            "mean_ms": json_float(self.mean_ms),
            "batches": self.batches,
            "classes": {str(k): v for k, v in sorted(self.classes.items())},
        }


@dataclass(frozen=True)
class OfflineReport:
    """Whether a candidate may replace its baseline, judged on a fixed dataset.

    ``failures`` describes each failed gate; ``passed`` is true when there are
    none. ``model_p50_ratio``/``model_p99_ratio`` are candidate over baseline
    per-batch model time; ``agreement`` the share of rows where both predict the
    same.
    """

    passed: bool
    failures: list[str]
    gates: tuple[GateResult, ...]
    rows: int
    batch_size: int
    candidate: RunSummary
    baseline: RunSummary
    agreement: float
    model_p50_ratio: float | None
    model_p99_ratio: float | None
    prediction_js: float | None
    prediction_chi_square_pvalue: float | None
    prediction_psi: float | None
    input_drift: DriftReport | None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dict of everything in the report."""
        drift = self.input_drift
        return {
            "passed": self.passed,
            "failures": list(self.failures),
            "gates": [gate.to_dict() for gate in self.gates],
            "rows": self.rows,
            "batch_size": self.batch_size,
            "candidate": self.candidate.to_dict(),
            "baseline": self.baseline.to_dict(),
            "agreement": json_float(self.agreement),
            "model_p50_ratio": json_float(self.model_p50_ratio),
            "model_p99_ratio": json_float(self.model_p99_ratio),
            "prediction_js": json_float(self.prediction_js),
            "prediction_chi_square_pvalue": json_float(
                self.prediction_chi_square_pvalue
            ),
            "prediction_psi": json_float(self.prediction_psi),
            "input_drift": None if drift is None else drift.to_dict(),
        }

    def to_html(self) -> str:
        """A self-contained HTML page: gates, accuracy, latency, classes, drift."""
        verdict = "PASSED" if self.passed else "FAILED"
        base, cand = self.baseline, self.candidate
        title = f"Offline validation of {cand.name} against {base.name}: {verdict}"
        parts = [
            "<!doctype html>",
            '<html lang="en"><head><meta charset="utf-8">',
            f"<title>{_e(title)}</title>",
            f"<style>{_CSS}</style></head><body>",
            f"<h1>{_e(title)}</h1>",
            f"<p>{self.rows} rows in batches of {self.batch_size}; agreement "
            f"{_pct(self.agreement)}.</p>",
            "<h2>Gates</h2>",
            _table(
                ["gate", "value", "threshold", "result"],
                [
                    [
                        _e(gate.name),
                        _num(gate.value),
                        f"{gate.bound} {gate.threshold:g}",
                        _verdict(gate.verdict is Verdict.PASS, gate.detail),
                    ]
                    for gate in self.gates
                ],
            ),
            "<h2>Accuracy and latency</h2>",
            _table(
                ["", _e(base.name), _e(cand.name), "change"],
                [
                    [
                        "accuracy",
                        _pct(base.accuracy),
                        _pct(cand.accuracy),
                        _points(cand.accuracy, base.accuracy),
                    ],
                    [
                        "p50 per batch (ms)",
                        _num(base.p50_ms),
                        _num(cand.p50_ms),
                        _times(self.model_p50_ratio),
                    ],
                    [
                        "p99 per batch (ms)",
                        _num(base.p99_ms),
                        _num(cand.p99_ms),
                        _times(self.model_p99_ratio),
                    ],
                    ["mean per batch (ms)", _num(base.mean_ms), _num(cand.mean_ms), ""],
                ],
            ),
        ]
        parts.extend(self._classes_html())
        parts.extend(self._drift_html())
        parts.append("</body></html>")
        return "\n".join(parts)

    def _classes_html(self) -> list[str]:
        base, cand = self.baseline, self.candidate
        if not (base.classes or cand.classes):
            return []
        base_total = sum(base.classes.values()) or 1
        cand_total = sum(cand.classes.values()) or 1
        rows = [
            [
                str(label),
                str(base.classes.get(label, 0)),
                _pct(base.classes.get(label, 0) / base_total),
                str(cand.classes.get(label, 0)),
                _pct(cand.classes.get(label, 0) / cand_total),
            ]
            for label in sorted({*base.classes, *cand.classes})
        ]
        return [
            "<h2>Predicted classes</h2>",
            f"<p>Jensen-Shannon divergence {_num(self.prediction_js)} bits; "
            f"chi-square p-value {_num(self.prediction_chi_square_pvalue)}.</p>",
            _table(["class", _e(base.name), "share", _e(cand.name), "share"], rows),
        ]

    def _drift_html(self) -> list[str]:
        drift = self.input_drift
        if drift is None:
            return []
        # Most moved first by the PSI net of its small-sample bias: the raw index
        # ranks the features with the fewest rows or most bins first.
        worst = sorted(drift.features, key=lambda row: row.psi_corrected, reverse=True)
        rows = [
            [
                _e(row.name),
                _num(row.psi_corrected),
                _num(row.psi),
                _e(row.band),
                _num(row.ks_statistic),
                _num(row.ks_pvalue),
                _verdict(not row.drifted, ""),
            ]
            for row in worst[:_DRIFT_ROWS]
        ]
        return [
            "<h2>Input drift against the reference</h2>",
            f"<p>{len(drift.drifted_features)} of {len(drift.features)} features "
            f"drifted (KS p-value below {drift.threshold:.3g}, Bonferroni at alpha "
            f"{drift.alpha:g}); the {min(len(worst), _DRIFT_ROWS)} largest PSI, "
            "less the PSI that samples of these sizes show with no drift at all. "
            "A band needs a test to agree (KS, or chi-square on the PSI's bins); "
            "&ldquo;insufficient&rdquo;: too few rows to rule out a moderate "
            "shift.</p>",
            _table(
                ["feature", "PSI net", "PSI raw", "band", "KS", "p-value", "result"],
                rows,
            ),
        ]


def _e(text: str) -> str:
    return html.escape(text, quote=True)


def _num(value: float | None) -> str:
    return "&ndash;" if json_float(value) is None else f"{value:.4g}"


def _pct(value: float | None) -> str:
    return "&ndash;" if json_float(value) is None else f"{value:.1%}"


def _points(new: float | None, old: float | None) -> str:
    if new is None or old is None:
        return ""
    return f"{(new - old) * 100:+.1f} points"


def _times(ratio: float | None) -> str:
    return "&ndash;" if json_float(ratio) is None else f"&times;{ratio:.3g}"


def _verdict(passed: bool, detail: str) -> str:
    label = "pass" if passed else "fail"
    note = f" <small>{_e(detail)}</small>" if detail else ""
    return f'<span class="{label}">{label}</span>{note}'


def _table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{cell}</th>" for cell in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>" for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


_CSS = (
    "body{font-family:system-ui,sans-serif;margin:2em;color:#222;max-width:60em}"
    "table{border-collapse:collapse;margin:0 0 1.5em}"
    "th,td{border:1px solid #ccc;padding:.3em .7em;text-align:right}"
    "th:first-child,td:first-child{text-align:left}"
    "th{background:#f3f3f3}"
    ".pass{color:#fff;background:#2e7d32;padding:0 .4em;border-radius:3px}"
    ".fail{color:#fff;background:#c62828;padding:0 .4em;border-radius:3px}"
)
