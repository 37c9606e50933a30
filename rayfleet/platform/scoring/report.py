"""The end of a batch job: the comparison report and the job's summary."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from rayfleet.platform.scoring.plan import BatchPlan
from rayfleet.platform.scoring.stats import BatchStats
from rayfleet.platform.validation.drift import feature_drift
from rayfleet.platform.validation.offline import OfflineGates, judge_candidate
from rayfleet.platform.validation.report import OfflineReport

__all__ = ["BatchSummary", "comparison_report"]


def comparison_report(
    plan: BatchPlan,
    stats: BatchStats,
    *,
    batch_size: int,
    gates: OfflineGates,
    reference: Mapping[str, np.ndarray] | None = None,
) -> OfflineReport | None:
    """The compared version judged against the scored one, as ``rayfleet
    validate`` judges a candidate: the same gates, drift tests and report.

    The scored version is the baseline, the compared one the candidate; latency
    is model time per batch of the same rows. ``reference`` (``f0, f1, ...``)
    adds the input-drift gate. ``None`` without pairs of predictions.
    """
    if plan.compare is None or not stats.pairs:
        return None
    names = [f"{plan.model}/{version}" for version in plan.versions]
    base, cand = (stats.tallies[version] for version in plan.versions)
    categorical = base.categorical and cand.categorical
    values = None
    if not categorical:
        values = np.fromiter(base.values, float), np.fromiter(cand.values, float)
    input_drift = None
    if reference and len(stats.features):
        sample = np.stack(list(stats.features)).astype(np.float64)
        current = {f"f{i}": sample[:, i] for i in range(sample.shape[1])}
        if any(name in current for name in reference):
            input_drift = feature_drift(reference, current, gates.alpha)
    return judge_candidate(
        gates,
        candidate=cand.run_summary(names[1], categorical),
        baseline=base.run_summary(names[0], categorical),
        agreement=stats.agreeing / stats.pairs,
        rows=stats.pairs,
        batch_size=batch_size,
        predicted_values=values,
        input_drift=input_drift,
    )


@dataclass(frozen=True)
class BatchSummary:
    """How a job went. It ``passed`` when the share of bad rows is at most
    ``max_error_share``; only then was the output committed."""

    model: str
    version: str
    compare: str | None
    input_uri: str
    output_uri: str
    errors_uri: str
    rows: int
    failed: int
    seconds: float
    max_error_share: float
    examples: tuple[str, ...] = ()
    report: OfflineReport | None = None

    @property
    def scored(self) -> int:
        """Rows with predictions."""
        return self.rows - self.failed

    @property
    def error_share(self) -> float:
        """Bad rows per row read; 0 for an empty input."""
        return self.failed / self.rows if self.rows else 0.0

    @property
    def rows_per_s(self) -> float:
        """Rows read per second of the whole job."""
        return self.rows / self.seconds if self.seconds > 0 else 0.0

    @property
    def passed(self) -> bool:
        """Whether the error share stayed within the limit."""
        return self.error_share <= self.max_error_share

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dict, with the comparison report when there is one."""
        return {
            "model": self.model,
            "version": self.version,
            "compare": self.compare,
            "input": self.input_uri,
            "output": self.output_uri if self.passed else None,
            "errors": self.errors_uri,
            "rows": self.rows,
            "scored": self.scored,
            "failed": self.failed,
            "error_share": self.error_share,
            "max_error_share": self.max_error_share,
            "passed": self.passed,
            "seconds": self.seconds,
            "rows_per_s": self.rows_per_s,
            "examples": list(self.examples),
            "report": None if self.report is None else self.report.to_dict(),
        }

    def describe(self) -> str:
        """A few lines for a terminal."""
        share = (
            f"{self.error_share:.2%} of rows failed, limit {self.max_error_share:.2%}"
        )
        lines = [
            f"{self.model}/{self.version} on {self.input_uri}: {self.rows} rows in "
            f"{self.seconds:.1f} s ({self.rows_per_s:,.0f} rows/s); "
            f"{self.scored} scored, {self.failed} failed",
            f"  output: {self.output_uri}"
            if self.passed
            else f"  output NOT written: {share}",
            f"  errors: {self.errors_uri}" + (f" ({share})" if self.passed else ""),
        ]
        lines += [f"    {example}" for example in self.examples]
        if self.report is not None:
            verdict = "passes" if self.report.passed else "fails"
            lines.append(
                f"  {self.compare} vs {self.version}: agreement "
                f"{self.report.agreement:.3f}; {verdict} the offline gates"
            )
            lines += [f"    {gate.describe()}" for gate in self.report.gates]
        return "\n".join(lines)
