"""Batch inference over Parquet: the pure parts of ``rayfleet batch``.

:mod:`rayfleet.deployments.batch_job` runs a job on Ray Data; everything it decides
is here, without Ray, so unit tests drive it in milliseconds:

- :func:`plan_batch`: which columns feed which model input, what the output
  holds, checked against the dataset's schema before any row is read.
- :func:`score_table`: one batch through one or two runtimes, bad rows marked
  with their reason rather than raised; :func:`split_scored` then separates the
  rows to write from the rows for the error file and the batch statistics.
- :class:`BatchStats`, :func:`comparison_report`, :class:`BatchSummary`: counts
  that merge across batches, the comparison report (the validation module's own
  :class:`OfflineReport`, gates and drift functions) and the job's summary.
- :class:`Location`, :func:`commit_folder`, :func:`write_error_file`: output
  that appears whole or not at all.

Columns to tensors. A model input of shape ``[-1, d1, ..., dk]`` takes
``F = d1 * ... * dk`` numbers per row, from (first that applies):

1. ``input_columns``: scalar columns stacked in the order given into ``[-1, F]``
   and reshaped; a pattern such as ``pixel_*`` stands for the matching columns in
   table order. A single list column named there is read as in 2.
2. a column named like the model input holding lists of ``F`` numbers (fixed or
   variable size; one level: nested lists are not read), or one number when the
   input takes one per row.
3. for a model with one input, every column but ``target``, ``prediction``,
   ``confidence``, the passthrough and the label column, in table order: how
   ``rayfleet validate`` reads a dataset, and how ``reference.parquet`` is laid out.

Numbers are cast to the input's datatype; a fraction meant for an integer input
is a bad row, not a silent truncation. Text columns are parsed per row. Each
output becomes one column: a number per row, or a fixed-size list (nested for
more dimensions), e.g. ``label`` int64 and ``probabilities`` list of 10 float.

Bad rows (a null, a list of the wrong length, text that is not a number) never
reach the model; they go to the error file with their reason and the job carries
on. A batch the model fails on is retried row by row, as a replica retries a
request alone, and the rows that fail alone are bad rows too.
"""

from __future__ import annotations

import fnmatch
import json
import math
import pickle
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from rayfleet.platform.errors import ConfigError, ModelError
from rayfleet.platform.prevalidate import LABEL_COLUMN
from rayfleet.platform.protocol.datatypes import numpy_dtype
from rayfleet.platform.runtimes.base import Runtime, guarded_predict
from rayfleet.platform.signature import Signature, TensorSpec
from rayfleet.platform.validation.agreement import predictions_agree
from rayfleet.platform.validation.compare import NON_FEATURE_COLUMNS
from rayfleet.platform.validation.drift import (
    chi_square,
    feature_drift,
    jensen_shannon,
    psi,
)
from rayfleet.platform.validation.observation import batch_predictions, summarize_batch

# The gates themselves, not a copy: a batch comparison must judge exactly as
# `rayfleet validate` does.
from rayfleet.platform.validation.offline import OfflineGates, _gates
from rayfleet.platform.validation.report import OfflineReport, RunSummary
from rayfleet.platform.validation.reservoir import Reservoir
from rayfleet.platform.validation.sketch import LatencySketch

__all__ = [
    "AGREE_COLUMN",
    "COMPARE_PREFIX",
    "COMPARE_VERSION_COLUMN",
    "DEFAULT_BATCH_SIZE",
    "ERROR_COLUMN",
    "SUCCESS_MARKER",
    "VALUES_COLUMN",
    "VERSION_COLUMN",
    "BatchPlan",
    "BatchStats",
    "BatchSummary",
    "InputBinding",
    "Location",
    "VersionTally",
    "commit_folder",
    "comparison_report",
    "plan_batch",
    "score_table",
    "split_scored",
    "write_error_file",
]

# Rows per model call. Per-batch Python work dominates small models: digits v1
# goes through score_table at ~50k rows/s in batches of 64 and ~700k in batches
# of 1024 (one core). Large models want what fits the accelerator.
DEFAULT_BATCH_SIZE = 1024
VERSION_COLUMN = "model_version"
COMPARE_PREFIX = "compare_"
COMPARE_VERSION_COLUMN = "compare_version"
AGREE_COLUMN = "agree"
# The error file: the reason, and the row's feature values as JSON text.
ERROR_COLUMN = "error"
VALUES_COLUMN = "values"
# Written last into a committed output folder; readers skip names starting "_".
SUCCESS_MARKER = "_SUCCESS"

# Carried from the scoring actors to the writers, never written to the output.
_ERROR = "__rayfleet_error"
_VALUES = "__rayfleet_values"
_STATS = "__rayfleet_stats"

# Uniform samples (bottom-k) for prediction PSI and input drift: size, and how
# many times the expected share of rows each batch offers, so that the merged
# sample is exact but a batch does not ship thousands of rows of features.
_SAMPLE_SIZE = 2000
_OVERSAMPLE = 4
_EXAMPLES = 5


@dataclass(frozen=True)
class InputBinding:
    """Where one model input comes from in the table.

    ``columns`` are scalar columns stacked in order, or (``list_column``) one
    column holding a list of numbers per row. ``shape`` is one row's shape: the
    input's dimensions after the batch dimension.
    """

    name: str
    datatype: str
    shape: tuple[int, ...]
    columns: tuple[str, ...]
    list_column: bool

    @property
    def width(self) -> int:
        """Numbers per row."""
        return math.prod(self.shape)


@dataclass(frozen=True)
class BatchPlan:
    """One job: versions, input bindings, and the output's columns.

    ``versions`` and ``signatures`` hold the scored version first and, in
    comparison mode, the compared version second. ``sample_rate`` is the share of
    rows each batch offers to the samples; ``drift_features`` how many feature
    summaries to sample for input drift (0: none).
    """

    model: str
    versions: tuple[str, ...]
    signatures: tuple[Signature, ...]
    bindings: tuple[InputBinding, ...]
    passthrough: tuple[pa.Field, ...]
    label_column: str | None
    tolerance: float = 1e-3
    sample_rate: float = 1.0
    drift_features: int = 0

    @property
    def compare(self) -> str | None:
        """The compared version, if any."""
        return self.versions[1] if len(self.versions) > 1 else None

    @property
    def read_columns(self) -> list[str]:
        """The columns the job reads, each once."""
        names = [c for b in self.bindings for c in b.columns]
        names += [f.name for f in self.passthrough]
        names += [self.label_column] if self.label_column else []
        return list(dict.fromkeys(names))

    @property
    def output_schema(self) -> pa.Schema:
        """The columns written to the output."""
        fields = list(self.passthrough)
        for index, signature in enumerate(self.signatures):
            prefix = COMPARE_PREFIX if index else ""
            fields += [
                pa.field(prefix + s.name, _arrow_type(s)) for s in signature.outputs
            ]
            fields.append(
                pa.field(
                    COMPARE_VERSION_COLUMN if index else VERSION_COLUMN, pa.string()
                )
            )
        if self.compare is not None:
            fields.append(pa.field(AGREE_COLUMN, pa.bool_()))
        return pa.schema(fields)

    @property
    def error_schema(self) -> pa.Schema:
        """The columns of the error file: passthrough, reason, values as JSON."""
        return pa.schema(
            [
                *self.passthrough,
                pa.field(ERROR_COLUMN, pa.string()),
                pa.field(VALUES_COLUMN, pa.string()),
            ]
        )

    @property
    def scored_schema(self) -> pa.Schema:
        """What :func:`score_table` returns: the output and the carried columns."""
        carried = [
            pa.field(_ERROR, pa.string()),
            pa.field(_VALUES, pa.string()),
            pa.field(_STATS, pa.binary()),
        ]
        return pa.schema([*self.output_schema, *carried])


def _arrow_type(spec: TensorSpec) -> pa.DataType:
    """One row of ``spec`` in Arrow: a number, or nested fixed-size lists."""
    try:
        kind = pa.from_numpy_dtype(numpy_dtype(spec.datatype))
    except (pa.ArrowNotImplementedError, TypeError) as error:
        raise ConfigError(
            f"tensor {spec.name!r}: batch scoring cannot store {spec.datatype}"
        ) from error
    for size in reversed(spec.shape[1:]):
        kind = pa.list_(kind, size)
    return kind


def _check_batchable(spec: TensorSpec, where: str) -> None:
    if not spec.batched or -1 in spec.shape[1:] or spec.datatype == "BYTES":
        raise ConfigError(
            f"{where}: tensor {spec.name!r} ({spec.datatype} {list(spec.shape)}) "
            "cannot be batch-scored: it needs a free first dimension, fixed others, "
            "and numbers, e.g. FP32 [-1, 64]"
        )
    _arrow_type(spec)


def _kind(kind: pa.DataType) -> str | None:
    """``number``, ``text`` or ``list`` (of numbers): what a column can feed."""
    t = pa.types
    if t.is_integer(kind) or t.is_floating(kind) or t.is_boolean(kind):
        return "number"
    if t.is_decimal(kind) or t.is_null(kind):
        return "number"
    if t.is_string(kind) or t.is_large_string(kind):
        return "text"
    if t.is_list(kind) or t.is_large_list(kind) or t.is_fixed_size_list(kind):
        return "list" if _kind(kind.value_type) == "number" else None
    return None


def _expand(patterns: Sequence[str], names: Sequence[str]) -> list[str]:
    """Column names for names and patterns, patterns in table order, each once."""
    found: list[str] = []
    for pattern in patterns:
        if any(mark in pattern for mark in "*?["):
            matches = [n for n in names if fnmatch.fnmatchcase(n, pattern)]
        else:
            matches = [pattern] if pattern in names else []
        if not matches:
            raise ConfigError(f"no column matches {pattern!r}; the table has {names}")
        found += matches
    return list(dict.fromkeys(found))


def _bind(
    spec: TensorSpec,
    schema: pa.Schema,
    columns: Sequence[str] | None,
    only_input: bool,
    not_features: set[str],
) -> InputBinding:
    shape = spec.shape[1:]
    names = list(schema.names)
    if columns is None and spec.name in names:
        columns = [spec.name]
    if columns is None and only_input:
        columns = [n for n in names if n not in not_features]
    if not columns:
        raise ConfigError(
            f"no column feeds input {spec.name!r}: name its columns (input_columns, "
            f"e.g. 'pixel_*'), or give the table a list column {spec.name!r}"
        )
    kinds = {name: _kind(schema.field(name).type) for name in columns}
    one_list = len(columns) == 1 and kinds[columns[0]] == "list"
    binding = InputBinding(spec.name, spec.datatype, shape, tuple(columns), one_list)
    if one_list:
        return binding
    unusable = [
        f"{name} ({schema.field(name).type})"
        for name, kind in kinds.items()
        if kind not in ("number", "text")
    ]
    if unusable:
        raise ConfigError(
            f"input {spec.name!r} stacks columns of numbers; these hold other "
            f"things: {unusable}"
        )
    if len(columns) != binding.width:
        raise ConfigError(
            f"input {spec.name!r} takes {binding.width} numbers per row "
            f"({list(spec.shape)}) but {len(columns)} columns feed it: "
            f"{list(columns)[:8]}{'...' if len(columns) > 8 else ''}"
        )
    return binding


def plan_batch(
    model: str,
    versions: Sequence[tuple[str, Signature]],
    schema: pa.Schema,
    *,
    input_columns: Sequence[str] | None = None,
    passthrough: Sequence[str] = (),
    label_column: str | None = LABEL_COLUMN,
    total_rows: int | None = None,
    drift_features: int = 0,
    tolerance: float = 1e-3,
) -> BatchPlan:
    """Check a job against the dataset's ``schema`` and fix its columns.

    ``versions`` holds ``(name, signature)`` of the scored version and, to
    compare, of a second one taking the same inputs. ``label_column`` is never a
    feature; when the table has it, it gives each compared version's accuracy.
    ``total_rows`` sizes the comparison's samples.
    Raises :class:`ConfigError` naming what does not fit.
    """
    if not 1 <= len(versions) <= 2:
        raise ConfigError("score one version, or two to compare them")
    for name, signature in versions:
        for spec in (*signature.inputs, *signature.outputs):
            _check_batchable(spec, f"{model}/{name}")
    first = versions[0][1]
    if len(versions) == 2 and versions[1][1].inputs != first.inputs:
        raise ConfigError(
            f"{model}/{versions[0][0]} and {model}/{versions[1][0]} take different "
            "inputs; comparing them needs the same"
        )
    missing = [name for name in passthrough if name not in schema.names]
    if missing:
        raise ConfigError(
            f"no passthrough column(s) {missing}; the table has {schema.names}"
        )
    # Labels and samples feed only the comparison report. Alone, a version needs
    # neither, and their per-row accounting took 60% of score_table's time
    # (digits v1, batches of 4096).
    compare = len(versions) == 2
    label = label_column if compare and label_column in schema.names else None
    not_features = {*NON_FEATURE_COLUMNS, *passthrough, label_column or ""}
    if input_columns is not None and len(first.inputs) != 1:
        raise ConfigError(
            f"{model} takes {len(first.inputs)} inputs; input_columns feeds one. "
            "Give each input a list column of its own name instead"
        )
    columns = None if input_columns is None else _expand(input_columns, schema.names)
    bindings = tuple(
        _bind(spec, schema, columns, len(first.inputs) == 1, not_features)
        for spec in first.inputs
    )
    rate = 1.0 if compare else 0.0
    if compare and total_rows:
        rate = min(1.0, _OVERSAMPLE * _SAMPLE_SIZE / total_rows)
    plan = BatchPlan(
        model=model,
        versions=tuple(name for name, _ in versions),
        signatures=tuple(signature for _, signature in versions),
        bindings=bindings,
        passthrough=tuple(schema.field(name) for name in dict.fromkeys(passthrough)),
        label_column=label,
        tolerance=tolerance,
        sample_rate=rate,
        drift_features=drift_features,
    )
    names = plan.output_schema.names
    clashes = sorted({n for n in names if names.count(n) > 1})
    if clashes:
        raise ConfigError(
            f"output column(s) {clashes} would appear twice: a passthrough column "
            "has the name of a model output or of a column the job adds"
        )
    return plan


class _Verdicts:
    """The first problem found with each row of a batch."""

    def __init__(self, rows: int) -> None:
        self.bad = np.zeros(rows, dtype=bool)
        self.reasons = np.full(rows, None, dtype=object)

    def flag(self, mask: np.ndarray, reason: str) -> None:
        fresh = mask & ~self.bad
        self.reasons[fresh] = reason
        self.bad |= mask

    def flag_row(self, row: int, reason: str) -> None:
        if not self.bad[row]:
            self.reasons[row] = reason
            self.bad[row] = True


def _cast(raw: np.ndarray, dtype: np.dtype[Any]) -> tuple[np.ndarray, np.ndarray]:
    """``raw`` as ``dtype``, and where that would change a value: a fraction,
    infinity or out-of-range number meant for an integer input."""
    lossy = np.zeros(raw.shape, dtype=bool)
    if dtype.kind in "iu" and raw.dtype.kind == "f":
        limits = np.iinfo(dtype)
        with np.errstate(invalid="ignore"):
            lossy = ~np.isfinite(raw) | (raw != np.round(raw))
            lossy |= (raw < limits.min) | (raw > limits.max)
        raw = np.where(lossy, 0, raw)
    return raw.astype(dtype, copy=False), lossy


def _scalars(
    column: pa.ChunkedArray, name: str, dtype: np.dtype[Any], verdicts: _Verdicts
) -> np.ndarray:
    rows = len(column)
    kind = _kind(column.type)
    if kind == "text":
        raw = np.zeros(rows)
        for row, text in enumerate(column.to_pylist()):
            try:
                raw[row] = float(text)
            except TypeError:
                verdicts.flag_row(row, f"null in column {name!r}")
            except ValueError:
                verdicts.flag_row(row, f"{text!r} in column {name!r} is not a number")
    elif kind == "number":
        raw = column.to_numpy()
        if column.null_count:
            nulls = column.is_null().to_numpy()
            verdicts.flag(nulls, f"null in column {name!r}")
            raw = np.where(nulls, 0, raw)
        if raw.dtype == object:  # decimals, or booleans with nulls
            raw = raw.astype(np.float64)
    else:
        verdicts.flag(np.ones(rows, dtype=bool), f"column {name!r} holds {column.type}")
        return np.zeros(rows, dtype=dtype)
    values, lossy = _cast(raw, dtype)
    for index in np.flatnonzero(lossy):
        verdicts.flag_row(int(index), f"{raw[index]} in column {name!r} is no integer")
    return values


def _list_values(
    column: pa.ChunkedArray, binding: InputBinding, verdicts: _Verdicts
) -> np.ndarray:
    rows, width, name = len(column), binding.width, binding.columns[0]
    dtype = numpy_dtype(binding.datatype)
    values = np.zeros((rows, width), dtype=dtype)
    if _kind(column.type) != "list":
        verdicts.flag(np.ones(rows, dtype=bool), f"column {name!r} holds {column.type}")
        return values
    array = column.combine_chunks()
    nulls = array.is_null().to_numpy(zero_copy_only=False)
    verdicts.flag(nulls, f"null in column {name!r}")
    lengths = pc.list_value_length(array).fill_null(width).to_numpy()
    for length in np.unique(lengths[lengths != width]):
        verdicts.flag(
            lengths == length,
            f"column {name!r} holds {length} values; input {binding.name!r} "
            f"takes {width}",
        )
    holes = np.zeros(rows, dtype=bool)
    flat = pc.list_flatten(array)
    if flat.null_count:
        parents = pc.list_parent_indices(array).to_numpy()
        holes[parents[flat.is_null().to_numpy(zero_copy_only=False)]] = True
        verdicts.flag(holes, f"null inside the list in column {name!r}")
    fine = ~(nulls | holes) & (lengths == width)
    if fine.any():
        kept = pc.list_flatten(array.filter(pa.array(fine)))
        raw = kept.to_numpy(zero_copy_only=False).reshape(-1, width)
        values[fine], lossy = _cast(raw, dtype)
        for row in np.flatnonzero(fine)[lossy.any(axis=1)]:
            verdicts.flag_row(int(row), f"column {name!r} holds non-integers")
    return values


def _input(table: pa.Table, binding: InputBinding, verdicts: _Verdicts) -> np.ndarray:
    """The binding's tensor for every row; rows it flags hold zeros."""
    rows = table.num_rows
    present = set(table.column_names)
    if not present.issuperset(binding.columns):
        verdicts.flag(np.ones(rows, dtype=bool), f"no column(s) {binding.columns}")
        return np.zeros((rows, *binding.shape), dtype=numpy_dtype(binding.datatype))
    if binding.list_column:
        values = _list_values(table.column(binding.columns[0]), binding, verdicts)
    else:
        dtype = numpy_dtype(binding.datatype)
        values = np.empty((rows, binding.width), dtype=dtype)
        for index, name in enumerate(binding.columns):
            values[:, index] = _scalars(table.column(name), name, dtype, verdicts)
    return values.reshape(rows, *binding.shape)


def _checked_predict(
    runtime: Runtime, inputs: Mapping[str, np.ndarray], signature: Signature, where: str
) -> tuple[dict[str, np.ndarray], float]:
    """Outputs that match the signature, one row per input row, and the time."""
    rows = len(next(iter(inputs.values())))
    outputs, ms = guarded_predict(runtime, inputs, where)
    checked = {}
    for spec in signature.outputs:
        value = outputs.get(spec.name)
        expected = (rows, *spec.shape[1:])
        if value is None or np.shape(value) != expected:
            got = "nothing" if value is None else f"shape {list(np.shape(value))}"
            raise ModelError(
                f"{where} returned {got} for {spec.name!r}; expected {list(expected)}"
            )
        checked[spec.name] = np.asarray(value).astype(numpy_dtype(spec.datatype))
    return checked, ms


def _predict(
    runtime: Runtime, inputs: Mapping[str, np.ndarray], signature: Signature, where: str
) -> tuple[np.ndarray, dict[str, np.ndarray], dict[int, str], float | None]:
    """``(ok, outputs of the ok rows, reason per failed row, ms)``.

    A batch that fails is retried row by row, so one row the model cannot take
    fails alone. Retried batches report no time: it would not be a batch's.
    """
    rows = len(next(iter(inputs.values())))
    try:
        outputs, ms = _checked_predict(runtime, inputs, signature, where)
        return np.ones(rows, dtype=bool), outputs, {}, ms
    except ModelError:
        pass
    ok = np.zeros(rows, dtype=bool)
    parts: list[dict[str, np.ndarray]] = []
    failures = {}
    for row in range(rows):
        single = {name: value[row : row + 1] for name, value in inputs.items()}
        try:
            parts.append(_checked_predict(runtime, single, signature, where)[0])
            ok[row] = True
        except ModelError as error:
            failures[row] = error.message
    outputs = _no_outputs(signature)
    if parts:
        outputs = {name: np.concatenate([p[name] for p in parts]) for name in outputs}
    return ok, outputs, failures, None


def _no_outputs(signature: Signature) -> dict[str, np.ndarray]:
    return {
        spec.name: np.zeros((0, *spec.shape[1:]), dtype=numpy_dtype(spec.datatype))
        for spec in signature.outputs
    }


def _column(spec: TensorSpec, values: np.ndarray, scored: np.ndarray) -> pa.Array:
    """An output as an Arrow column over every row, null where not scored."""
    dims = spec.shape[1:]
    full = np.zeros((len(scored), *dims), dtype=numpy_dtype(spec.datatype))
    full[scored] = values
    if not dims:
        return pa.array(full, mask=~scored)
    array = pa.array(full.reshape(-1))
    for size in reversed(dims[1:]):
        array = pa.FixedSizeListArray.from_arrays(array, size)
    return pa.FixedSizeListArray.from_arrays(array, dims[0], mask=pa.array(~scored))


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
    values: Reservoir[float] = field(default_factory=lambda: Reservoir(_SAMPLE_SIZE))
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
            self.correct += sum(
                bool(predictions_agree(p, t, tolerance))
                for p, t in zip(predictions[known], truth[known], strict=True)
            )

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
        default_factory=lambda: Reservoir(_SAMPLE_SIZE)
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
    if _kind(values.type) != "number":
        return None
    picked = values.take(pa.array(rows)).cast(pa.float64())
    return np.asarray(picked.fill_null(np.nan).to_numpy(), dtype=np.float64)


def _batch_stats(
    plan: BatchPlan,
    table: pa.Table,
    verdicts: _Verdicts,
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
        agree = np.array(
            [
                predictions_agree(a, b, plan.tolerance)
                for a, b in zip(first, second, strict=True)
            ],
            dtype=bool,
        )
        stats.pairs, stats.agreeing = len(agree), int(agree.sum())
    if plan.drift_features:
        offered = np.flatnonzero(priorities < plan.sample_rate)
        sample = {name: value[offered] for name, value in inputs.items()}
        summary = summarize_batch(sample, max_features=plan.drift_features)
        if summary is not None:
            for row, features in zip(offered, summary.astype(np.float32), strict=True):
                stats.features.add(float(priorities[row]), features)
    return stats, agree


def score_table(
    table: pa.Table,
    plan: BatchPlan,
    runtimes: Sequence[Runtime],
    rng: np.random.Generator,
) -> pa.Table:
    """Score one batch: :attr:`BatchPlan.scored_schema`, one row per input row.

    Bad rows get null outputs and their reason; the first row carries the
    batch's :class:`BatchStats` (pickled), so statistics travel with the rows
    and count once whichever writer receives them.
    """
    rows = table.num_rows
    verdicts = _Verdicts(rows)
    tensors = {b.name: _input(table, b, verdicts) for b in plan.bindings}
    kept = np.flatnonzero(~verdicts.bad)
    inputs = {name: tensor[kept] for name, tensor in tensors.items()}
    results: list[tuple[np.ndarray, dict[str, np.ndarray], float | None]] = []
    for version, signature, runtime in zip(
        plan.versions, plan.signatures, runtimes, strict=True
    ):
        if not len(kept):
            results.append((np.zeros(0, dtype=bool), _no_outputs(signature), None))
            continue
        where = f"{plan.model}/{version}"
        ok, outputs, failures, ms = _predict(runtime, inputs, signature, where)
        for position, reason in failures.items():
            verdicts.flag_row(int(kept[position]), reason)
        results.append((ok, outputs, ms))
    scored = ~verdicts.bad
    in_kept = scored[kept]
    columns: dict[str, pa.Array | pa.ChunkedArray] = {
        f.name: table.column(f.name).cast(f.type) for f in plan.passthrough
    }
    predictions = []
    for index, (version, signature, (ok, outputs, ms)) in enumerate(
        zip(plan.versions, plan.signatures, results, strict=True)
    ):
        prefix = COMPARE_PREFIX if index else ""
        final = {name: value[in_kept[ok]] for name, value in outputs.items()}
        for spec in signature.outputs:
            columns[prefix + spec.name] = _column(spec, final[spec.name], scored)
        name = COMPARE_VERSION_COLUMN if index else VERSION_COLUMN
        columns[name] = pa.repeat(pa.scalar(version), rows)
        # batch_predictions cannot reshape zero rows; no rows, no predictions.
        values = batch_predictions(final)[0] if scored.any() else None
        predictions.append((values, ms))
    scored_inputs = {name: tensor[scored] for name, tensor in tensors.items()}
    stats, agree = _batch_stats(plan, table, verdicts, predictions, scored_inputs, rng)
    if plan.compare is not None:
        full = np.zeros(rows, dtype=bool)
        if agree is not None:
            full[scored] = agree
        unknown = ~scored if agree is not None else np.ones(rows, dtype=bool)
        columns[AGREE_COLUMN] = pa.array(full, mask=unknown)
    columns[_ERROR] = pa.array(verdicts.reasons, type=pa.string())
    columns[_VALUES] = _bad_values(table, plan, verdicts.bad)
    blobs = [pickle.dumps(stats)] + [None] * (rows - 1) if rows else []
    columns[_STATS] = pa.array(blobs, type=pa.binary())
    schema = plan.scored_schema
    return pa.table([columns[name] for name in schema.names], schema=schema)


def _bad_values(table: pa.Table, plan: BatchPlan, bad: np.ndarray) -> pa.Array:
    """The feature values of each bad row as JSON text; null for good rows."""
    texts = np.full(len(bad), None, dtype=object)
    where = np.flatnonzero(bad)
    if len(where):
        sources = [c for b in plan.bindings for c in b.columns]
        present = [c for c in dict.fromkeys(sources) if c in table.column_names]
        picked = table.select(present).take(pa.array(where)).to_pylist()
        texts[where] = [json.dumps(row, default=str) for row in picked]
    return pa.array(texts, type=pa.string())


def split_scored(
    table: pa.Table, plan: BatchPlan
) -> tuple[pa.Table, pa.Table, BatchStats]:
    """From :func:`score_table`'s rows: the rows to write, the error rows, and
    the merged statistics of the batches whose first row is among them."""
    failed = table.column(_ERROR).is_valid()
    good = table.filter(pc.invert(failed)).select(plan.output_schema.names)
    bad = table.filter(failed)
    errors = pa.table(
        [
            *(bad.column(f.name) for f in plan.passthrough),
            bad.column(_ERROR),
            bad.column(_VALUES),
        ],
        schema=plan.error_schema,
    )
    blobs = table.column(_STATS).drop_null().to_pylist()
    stats = BatchStats.combine(pickle.loads(blob) for blob in blobs)
    return good, errors, stats


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
    base_run = base.run_summary(names[0], categorical)
    cand_run = cand.run_summary(names[1], categorical)
    js = pvalue = value_psi = None
    if categorical:
        js = jensen_shannon(base_run.classes, cand_run.classes)
        pvalue = chi_square(base_run.classes, cand_run.classes)[1]
    else:
        value_psi = psi(
            np.fromiter(base.values, float), np.fromiter(cand.values, float)
        )
    input_drift = None
    if reference and len(stats.features):
        sample = np.stack(list(stats.features)).astype(np.float64)
        current = {f"f{i}": sample[:, i] for i in range(sample.shape[1])}
        if any(name in current for name in reference):
            input_drift = feature_drift(reference, current, gates.alpha)
    agreement = stats.agreeing / stats.pairs

    def ratio(candidate: float, baseline: float) -> float | None:
        return candidate / baseline if baseline > 0 else None

    p99_ratio = ratio(cand_run.p99_ms, base_run.p99_ms)
    checks = _gates(
        gates,
        agreement=agreement,
        candidate=cand_run,
        baseline=base_run,
        p99_ratio=p99_ratio,
        js=js,
        value_psi=value_psi,
        input_drift=input_drift,
    )
    failures = [check.describe() for check in checks if not check.passed]
    return OfflineReport(
        passed=not failures,
        failures=failures,
        gates=checks,
        rows=stats.pairs,
        batch_size=batch_size,
        candidate=cand_run,
        baseline=base_run,
        agreement=agreement,
        p50_ratio=ratio(cand_run.p50_ms, base_run.p50_ms),
        p99_ratio=p99_ratio,
        prediction_js=js,
        prediction_chi_square_pvalue=pvalue,
        prediction_psi=value_psi,
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


@dataclass(frozen=True)
class Location:
    """A file or folder on a pyarrow filesystem, and its URI.

    Filesystem options in a URI's query (``?endpoint_override=...``) stay on
    every location derived from it.
    """

    fs: pafs.FileSystem
    path: str
    base: str
    query: str = ""

    @classmethod
    def of(cls, uri: str) -> Location:
        """The location a URI or a local path names."""
        if "://" not in uri:
            path = str(Path(uri).expanduser().resolve())
            return cls(pafs.LocalFileSystem(), path, path)
        try:
            fs, path = pafs.FileSystem.from_uri(uri)
        except (ValueError, OSError) as error:
            raise ConfigError(f"cannot open {uri!r}: {error}") from error
        base, mark, query = uri.partition("?")
        return cls(fs, path.rstrip("/"), base.rstrip("/"), mark + query)

    @property
    def uri(self) -> str:
        """The URI, filesystem options included."""
        return self.base + self.query

    @property
    def name(self) -> str:
        """The last part of the path."""
        return self.path.rsplit("/", 1)[-1]

    @property
    def is_local(self) -> bool:
        """Whether this is on the local filesystem, where a rename is atomic."""
        return isinstance(self.fs, pafs.LocalFileSystem)

    def child(self, name: str) -> Location:
        """``name`` inside this folder."""
        return Location(
            self.fs, f"{self.path}/{name}", f"{self.base}/{name}", self.query
        )

    def sibling(self, name: str) -> Location:
        """``name`` beside this file or folder."""
        path, base = self.path.rsplit("/", 1)[0], self.base.rsplit("/", 1)[0]
        return Location(self.fs, f"{path}/{name}", f"{base}/{name}", self.query)

    def exists(self) -> bool:
        """Whether anything is there."""
        return bool(self.fs.get_file_info(self.path).type != pafs.FileType.NotFound)

    def remove(self) -> None:
        """Delete the file or folder, if there is one."""
        kind = self.fs.get_file_info(self.path).type
        if kind == pafs.FileType.Directory:
            self.fs.delete_dir(self.path)
        elif kind != pafs.FileType.NotFound:
            self.fs.delete_file(self.path)

    def files(self) -> list[Location]:
        """The files directly in this folder, sorted; none when it is missing."""
        selector = pafs.FileSelector(self.path, allow_not_found=True)
        infos = self.fs.get_file_info(selector)
        return [
            self.child(info.base_name)
            for info in sorted(infos, key=lambda info: info.base_name)
            if info.type == pafs.FileType.File
        ]

    def staging(self) -> Location:
        """A new, hidden sibling to build this in before it is moved here."""
        return self.sibling(f".{self.name}.rayfleet-{uuid.uuid4().hex[:12]}")


def _touch(location: Location) -> None:
    with location.fs.open_output_stream(location.path):
        pass


def commit_folder(staged: Location, final: Location, *, overwrite: bool) -> None:
    """Move the finished folder ``staged`` to ``final``, marked with ``_SUCCESS``.

    Local filesystem: a rename, atomic (``staged`` is a sibling, so on the same
    filesystem); an existing ``final`` is renamed aside first and deleted after.
    Object stores have no rename: the files are copied into place and
    ``_SUCCESS`` is written last, so a reader that sees it sees every file (a
    crash mid-copy leaves a folder without it).
    """
    if final.exists():
        if not overwrite:
            raise ConfigError(
                f"{final.uri} already exists; pass overwrite to replace it"
            )
    else:
        overwrite = False
    if final.is_local:
        _touch(staged.child(SUCCESS_MARKER))
        aside = staged.sibling(f"{staged.name}.previous")
        if overwrite:
            final.fs.move(final.path, aside.path)
        final.fs.move(staged.path, final.path)
        aside.remove()
        return
    if overwrite:
        final.remove()
    final.fs.create_dir(final.path, recursive=True)
    pafs.copy_files(
        staged.path,
        final.path,
        source_filesystem=staged.fs,
        destination_filesystem=final.fs,
    )
    _touch(final.child(SUCCESS_MARKER))


def write_error_file(
    parts: Sequence[Location], final: Location, schema: pa.Schema
) -> int:
    """Concatenate error parts (Parquet) into one file at ``final``; row count.

    JSON Lines when ``final`` ends in ``.jsonl`` or ``.json`` (``values`` parsed
    back into an object), Parquet otherwise. Written beside ``final`` and moved
    into place, so a reader never sees half a file. Parts are read one at a
    time: the job never holds every error row at once.
    """
    scratch = final.sibling(f".{final.name}.{uuid.uuid4().hex[:12]}.tmp")
    final.fs.create_dir(final.path.rsplit("/", 1)[0], recursive=True)
    rows = 0
    as_json = final.name.endswith((".jsonl", ".json"))
    try:
        with final.fs.open_output_stream(scratch.path) as stream:
            writer = None if as_json else pq.ParquetWriter(stream, schema)
            for part in parts:
                table = pq.read_table(part.path, filesystem=part.fs).cast(schema)
                rows += table.num_rows
                if writer is not None:
                    writer.write_table(table)
                    continue
                for row in table.to_pylist():
                    row[VALUES_COLUMN] = json.loads(row[VALUES_COLUMN] or "null")
                    stream.write((json.dumps(row, default=str) + "\n").encode())
            if writer is not None:
                writer.close()
        final.fs.move(scratch.path, final.path)
    finally:
        scratch.remove()
    return rows
