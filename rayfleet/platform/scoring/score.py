"""One batch through one or two runtimes, bad rows marked rather than raised.

Bad rows (see :mod:`.tensors`) never reach the model; they go to the error file
with their reason and the job carries on. A batch the model fails on is retried
row by row, as a replica retries a request alone, and the rows that fail alone
are bad rows too. :func:`split_scored` then separates the rows to write from the
rows for the error file and the batch statistics.
"""

from __future__ import annotations

import json
import pickle
from collections.abc import Mapping, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from rayfleet.platform.config.signature import Signature
from rayfleet.platform.errors import ModelError
from rayfleet.platform.protocol.datatypes import numpy_dtype
from rayfleet.platform.runtimes.base import Runtime, guarded_predict
from rayfleet.platform.scoring.plan import (
    AGREE_COLUMN,
    CARRIED_ERROR,
    CARRIED_STATS,
    CARRIED_VALUES,
    COMPARE_PREFIX,
    COMPARE_VERSION_COLUMN,
    VERSION_COLUMN,
    BatchPlan,
)
from rayfleet.platform.scoring.stats import BatchStats, batch_stats
from rayfleet.platform.scoring.tensors import Verdicts, output_column, read_input
from rayfleet.platform.validation.observation import batch_predictions

__all__ = ["score_table", "split_scored"]


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
    verdicts = Verdicts(rows)
    tensors = {b.name: read_input(table, b, verdicts) for b in plan.bindings}
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
            columns[prefix + spec.name] = output_column(spec, final[spec.name], scored)
        name = COMPARE_VERSION_COLUMN if index else VERSION_COLUMN
        columns[name] = pa.repeat(pa.scalar(version), rows)
        # batch_predictions cannot reshape zero rows; no rows, no predictions.
        values = batch_predictions(final)[0] if scored.any() else None
        predictions.append((values, ms))
    scored_inputs = {name: tensor[scored] for name, tensor in tensors.items()}
    stats, agree = batch_stats(plan, table, verdicts, predictions, scored_inputs, rng)
    if plan.compare is not None:
        full = np.zeros(rows, dtype=bool)
        if agree is not None:
            full[scored] = agree
        unknown = ~scored if agree is not None else np.ones(rows, dtype=bool)
        columns[AGREE_COLUMN] = pa.array(full, mask=unknown)
    columns[CARRIED_ERROR] = pa.array(verdicts.reasons, type=pa.string())
    columns[CARRIED_VALUES] = _bad_values(table, plan, verdicts.bad)
    blobs = [pickle.dumps(stats)] + [None] * (rows - 1) if rows else []
    columns[CARRIED_STATS] = pa.array(blobs, type=pa.binary())
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
    failed = table.column(CARRIED_ERROR).is_valid()
    good = table.filter(pc.invert(failed)).select(plan.output_schema.names)
    bad = table.filter(failed)
    errors = pa.table(
        [
            *(bad.column(f.name) for f in plan.passthrough),
            bad.column(CARRIED_ERROR),
            bad.column(CARRIED_VALUES),
        ],
        schema=plan.error_schema,
    )
    blobs = table.column(CARRIED_STATS).drop_null().to_pylist()
    stats = BatchStats.combine(pickle.loads(blob) for blob in blobs)
    return good, errors, stats
