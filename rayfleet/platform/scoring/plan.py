"""A batch job's plan: which columns feed which model input, and what it writes.

:func:`plan_batch` checks a job against the dataset's schema before any row is
read. A model input of shape ``[-1, d1, ..., dk]`` takes ``F = d1 * ... * dk``
numbers per row, from (first that applies):

1. ``input_columns``: scalar columns stacked in the order given into ``[-1, F]``
   and reshaped; a pattern such as ``pixel_*`` stands for the matching columns in
   table order. A single list column named there is read as in 2.
2. a column named like the model input holding lists of ``F`` numbers (fixed or
   variable size; one level: nested lists are not read), or one number when the
   input takes one per row.
3. for a model with one input, every column but ``target``, ``prediction``,
   ``confidence``, the passthrough and the label column, in table order: how
   ``rayfleet validate`` reads a dataset, and how ``reference.parquet`` is laid out.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence
from dataclasses import dataclass

import pyarrow as pa

from rayfleet.platform.config.signature import Signature, TensorSpec
from rayfleet.platform.errors import ConfigError
from rayfleet.platform.scoring.tensors import InputBinding, arrow_type, column_kind
from rayfleet.platform.validation.compare import NON_FEATURE_COLUMNS
from rayfleet.platform.validation.predeploy import LABEL_COLUMN

__all__ = [
    "AGREE_COLUMN",
    "CARRIED_ERROR",
    "CARRIED_STATS",
    "CARRIED_VALUES",
    "COMPARE_PREFIX",
    "COMPARE_VERSION_COLUMN",
    "DEFAULT_BATCH_SIZE",
    "ERROR_COLUMN",
    "SAMPLE_SIZE",
    "VALUES_COLUMN",
    "VERSION_COLUMN",
    "BatchPlan",
    "plan_batch",
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

# Carried from the scoring actors to the writers, never written to the output.
CARRIED_ERROR = "__rayfleet_error"
CARRIED_VALUES = "__rayfleet_values"
CARRIED_STATS = "__rayfleet_stats"

# Uniform samples (bottom-k) for prediction PSI and input drift: size, and how
# many times the expected share of rows each batch offers, so that the merged
# sample is exact but a batch does not ship thousands of rows of features.
SAMPLE_SIZE = 2000
_OVERSAMPLE = 4


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
                pa.field(prefix + s.name, arrow_type(s)) for s in signature.outputs
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
            pa.field(CARRIED_ERROR, pa.string()),
            pa.field(CARRIED_VALUES, pa.string()),
            pa.field(CARRIED_STATS, pa.binary()),
        ]
        return pa.schema([*self.output_schema, *carried])


def _check_batchable(spec: TensorSpec, where: str) -> None:
    if not spec.batched or -1 in spec.shape[1:] or spec.datatype == "BYTES":
        raise ConfigError(
            f"{where}: tensor {spec.name!r} ({spec.datatype} {list(spec.shape)}) "
            "cannot be batch-scored: it needs a free first dimension, fixed others, "
            "and numbers, e.g. FP32 [-1, 64]"
        )
    arrow_type(spec)


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
    kinds = {name: column_kind(schema.field(name).type) for name in columns}
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
        rate = min(1.0, _OVERSAMPLE * SAMPLE_SIZE / total_rows)
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
