"""What a batch job saw, in counts and samples that merge across batches.

Each batch's :class:`BatchStats` travels with its rows to whichever writer
receives them; the writers' merge is the job's. Samples are uniform (bottom-k by
a random priority per row), so the merge of per-batch samples is itself one.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from rayfleet.platform.scoring.plan import SAMPLE_SIZE, BatchPlan
from rayfleet.platform.scoring.tensors import Verdicts, column_kind
from rayfleet.platform.validation.agreement import agreement_mask
from rayfleet.platform.validation.observation import summarize_batch
from rayfleet.platform.validation.report import RunSummary
from rayfleet.platform.validation.reservoir import Reservoir
from rayfleet.platform.validation.sketch import LatencySketch

__all__ = ["BatchStats", "VersionTally", "batch_stats"]

# Reasons for bad rows a job keeps, to show beside its error count.
_EXAMPLES = 5


@dataclass
class VersionTally:
    """One version over the batches so far: predictions, accuracy, batch times.

    ``classes`` counts whole-number predictions (class ids); ``fractional``
    counts the others, which mark a regressor. ``values`` samples predictions for
    the PSI of a regressor. ``correct`` of ``labelled`` rows matched the label.
    """

    batch_ms: LatencySketch = field(default_factory=LatencySketch)
    classes: dict[int, int] = field(default_factory=dict)
    fractional: int = 0
    values: Reservoir[float] = field(default_factory=lambda: Reservoir(SAMPLE_SIZE))
    labelled: int = 0
    correct: int = 0

    @property
    def categorical(self) -> bool:
        """Whether every prediction was a class id."""
        return self.fractional == 0

    def add(
        self,
        predictions: np.ndarray,
        ms: float | None,
        truth: np.ndarray | None,
        priorities: np.ndarray,
        rate: float,
        tolerance: float,
    ) -> None:
        """Account for one batch's predictions (``priorities`` for sampling)."""
        if ms is not None:
            self.batch_ms.add(ms)
        finite = predictions[np.isfinite(predictions)]
        whole = finite == np.floor(finite)
        self.fractional += int((~whole).sum())
        labels, counts = np.unique(finite[whole].astype(np.int64), return_counts=True)
        for label, count in zip(labels.tolist(), counts.tolist(), strict=True):
            self.classes[label] = self.classes.get(label, 0) + count
        for row in np.flatnonzero(priorities < rate):
            self.values.add(float(priorities[row]), float(predictions[row]))
        if truth is not None:
            known = np.isfinite(truth)
            self.labelled += int(known.sum())
            agree = agreement_mask(predictions[known], truth[known], tolerance)
            self.correct += int(agree.sum())

    def merge(self, other: VersionTally) -> None:
        """Add ``other``'s batches to this one."""
        self.batch_ms.merge(other.batch_ms)
        for label, count in other.classes.items():
            self.classes[label] = self.classes.get(label, 0) + count
        self.fractional += other.fractional
        self.values.merge(other.values)
        self.labelled += other.labelled
        self.correct += other.correct

    def run_summary(self, name: str, categorical: bool) -> RunSummary:
        """This version as the offline report's :class:`RunSummary`."""
        sketch = self.batch_ms
        return RunSummary(
            name=name,
            accuracy=self.correct / self.labelled if self.labelled else None,
            p50_ms=sketch.quantile(0.5) or 0.0,
            p99_ms=sketch.quantile(0.99) or 0.0,
            mean_ms=sketch.mean or 0.0,
            batches=sketch.count,
            classes=dict(self.classes) if categorical else {},
        )


@dataclass
class BatchStats:
    """What a job saw, in a form that merges across batches and writers.

    ``rows`` read, ``failed`` of them bad (``examples`` holds a few reasons);
    ``tallies`` per version; in comparison mode ``agreeing`` of ``pairs`` scored
    rows got the same prediction from both versions, and ``features`` samples
    the inputs' feature summaries for input drift.
    """

    rows: int = 0
    failed: int = 0
    examples: list[str] = field(default_factory=list)
    tallies: dict[str, VersionTally] = field(default_factory=dict)
    pairs: int = 0
    agreeing: int = 0
    features: Reservoir[np.ndarray] = field(
        default_factory=lambda: Reservoir(SAMPLE_SIZE)
    )

    def merge(self, other: BatchStats) -> None:
        """Add ``other`` to this one."""
        self.rows += other.rows
        self.failed += other.failed
        self.examples = (self.examples + other.examples)[:_EXAMPLES]
        for version, tally in other.tallies.items():
            self.tallies.setdefault(version, VersionTally()).merge(tally)
        self.pairs += other.pairs
        self.agreeing += other.agreeing
        self.features.merge(other.features)

    @classmethod
    def combine(cls, parts: Iterable[BatchStats]) -> BatchStats:
        """The merge of ``parts``."""
        total = cls()
        for part in parts:
            total.merge(part)
        return total


def _truth(table: pa.Table, column: str | None, rows: np.ndarray) -> np.ndarray | None:
    if column is None or column not in table.column_names:
        return None
    values = table.column(column)
    if column_kind(values.type) != "number":
        return None
    picked = values.take(pa.array(rows)).cast(pa.float64())
    return np.asarray(picked.fill_null(np.nan).to_numpy(), dtype=np.float64)


def batch_stats(
    plan: BatchPlan,
    table: pa.Table,
    verdicts: Verdicts,
    predictions: Sequence[tuple[np.ndarray | None, float | None]],
    inputs: Mapping[str, np.ndarray],
    rng: np.random.Generator,
) -> tuple[BatchStats, np.ndarray | None]:
    """The batch's statistics, and per scored row whether the versions agree."""
    scored = np.flatnonzero(~verdicts.bad)
    reasons = verdicts.reasons[verdicts.bad]
    stats = BatchStats(
        rows=table.num_rows,
        failed=len(reasons),
        examples=[str(r) for r in dict.fromkeys(reasons.tolist())][:_EXAMPLES],
    )
    priorities = rng.random(len(scored))
    truth = _truth(table, plan.label_column, scored)
    for version, (values, ms) in zip(plan.versions, predictions, strict=True):
        tally = stats.tallies.setdefault(version, VersionTally())
        if values is not None:
            tally.add(values, ms, truth, priorities, plan.sample_rate, plan.tolerance)
    agree = None
    first, second = predictions[0][0], predictions[-1][0]
    if plan.compare is not None and first is not None and second is not None:
        agree = agreement_mask(first, second, plan.tolerance)
        stats.pairs, stats.agreeing = len(agree), int(agree.sum())
    if plan.drift_features:
        offered = np.flatnonzero(priorities < plan.sample_rate)
        sample = {name: value[offered] for name, value in inputs.items()}
        summary = summarize_batch(sample, max_features=plan.drift_features)
        if summary is not None:
            for row, features in zip(offered, summary.astype(np.float32), strict=True):
                stats.features.add(float(priorities[row]), features)
    return stats, agree
