"""A version's ``reference.parquet``, rebuilt from the inputs its request log holds.

The reference is what the Validator tests input drift against
(:func:`~rayfleet.platform.validation.compare.reference_features`): one column per
feature of an observation's summary, in order, and ``prediction`` and
``confidence`` (null for a request that failed), which the drift test leaves out.
Features are summarized from the logged inputs by the same function that
summarizes a request at the router
(:func:`~rayfleet.platform.validation.observation.summarize_batch`), so a feature
``f{i}`` here is the feature ``f{i}`` of live traffic.

Rows are a uniform sample of the chosen days: each row read gets a random
priority and the lowest ``rows`` are kept, a batch at a time, so a month of log
is read in bounded memory.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads

from rayfleet.platform.config.signature import Signature
from rayfleet.platform.config.store import ModelStore
from rayfleet.platform.errors import ConfigError, StoreError
from rayfleet.platform.requestlog.files import day_folder, log_days, log_parts
from rayfleet.platform.requestlog.table import output_column
from rayfleet.platform.validation.columns import tensor_column
from rayfleet.platform.validation.observation import batch_predictions, summarize_batch

__all__ = ["DEFAULT_REFERENCE_ROWS", "ReferenceBuild", "build_reference"]

# The Validator tests every stable version's inputs against its reference at each
# scrape, at a cost that grows with the reference (64 features and 540 rows take
# about 2 s): a thousand rows pin the distribution of each feature well enough
# for a KS test at the usual alpha.
DEFAULT_REFERENCE_ROWS = 1000


@dataclass(frozen=True)
class ReferenceBuild:
    """A reference built from a request log, and what it was built from."""

    table: pa.Table
    logged_rows: int
    days: tuple[date, ...]
    parts: int


def build_reference(
    store: ModelStore,
    model: str,
    version: str,
    *,
    since: date,
    rows: int = DEFAULT_REFERENCE_ROWS,
    seed: int | None = 0,
) -> ReferenceBuild:
    """A reference table for ``model``/``version`` from its request log, days
    ``since`` on, sampled down to ``rows`` rows.

    Raises :class:`StoreError` when the version has no request log for those
    days, and :class:`ConfigError` when its inputs cannot be summarized.
    """
    if rows < 1:
        raise ConfigError(f"rows must be at least 1: {rows}")
    signature = store.manifest(model, version).signature
    folder = store.request_log(model, version)
    all_days = log_days(folder)
    days = [day for day in all_days if day >= since]
    parts = log_parts(folder, days)
    if not parts:
        held = (
            f"it holds {day_folder(all_days[0])} to {day_folder(all_days[-1])}"
            if all_days
            else "it holds no day"
        )
        raise StoreError(
            f"no request log of {model}/{version} since {since.isoformat()} under "
            f"{folder.uri} ({held}); the spec's request_log.enabled turns it on"
        )
    dataset = pads.dataset(
        [part.path for part in parts], filesystem=folder.fs, format="parquet"
    )
    columns = [spec.name for spec in signature.inputs]
    names = set(dataset.schema.names)
    missing = [name for name in columns if name not in names]
    if missing:
        raise ConfigError(
            f"the request log of {model}/{version} has no column(s) {missing}: "
            "was the version's signature changed?"
        )
    outputs = [
        output_column(spec.name)
        for spec in signature.outputs
        if output_column(spec.name) in names
    ]
    sample, logged = _sample(dataset, [*columns, *outputs], rows, seed)
    return ReferenceBuild(
        table=_reference_table(sample, signature),
        logged_rows=logged,
        days=tuple(days),
        parts=len(parts),
    )


def _sample(
    dataset: pads.Dataset, columns: list[str], rows: int, seed: int | None
) -> tuple[pa.Table, int]:
    """A uniform sample of ``rows`` rows (all, when fewer), in the order read,
    and how many rows there were."""
    rng = np.random.default_rng(seed)
    kept: pa.Table | None = None
    priority = np.zeros(0)
    order = np.zeros(0, dtype=np.int64)
    seen = 0
    for batch in dataset.to_batches(columns=columns):
        if not batch.num_rows:
            continue
        table = pa.Table.from_batches([batch])
        fresh = rng.random(batch.num_rows)
        kept = table if kept is None else pa.concat_tables([kept, table])
        priority = np.concatenate([priority, fresh])
        order = np.concatenate([order, np.arange(seen, seen + batch.num_rows)])
        seen += batch.num_rows
        if len(priority) > rows:
            lowest = np.argpartition(priority, rows)[:rows]
            kept = kept.take(pa.array(lowest))
            priority, order = priority[lowest], order[lowest]
    if kept is None:
        raise StoreError("the request log's parts hold no rows")
    return kept.take(pa.array(np.argsort(order))), seen


def _reference_table(sample: pa.Table, signature: Signature) -> pa.Table:
    """Feature summaries ``f0, f1, ...`` of the sampled inputs, and the
    prediction and confidence of the logged outputs (null where a request failed,
    or the outputs hold none)."""
    inputs = {
        spec.name: tensor_column(sample.column(spec.name), spec)
        for spec in signature.inputs
    }
    features = summarize_batch(inputs)
    if features is None or features.shape[1] == 0:
        raise ConfigError(
            "the version's inputs have no numbers to summarize into features"
        )
    columns = {f"f{i}": features[:, i] for i in range(features.shape[1])}
    prediction = np.full(sample.num_rows, np.nan)
    confidence = np.full(sample.num_rows, np.nan)
    logged = [
        spec
        for spec in signature.outputs
        if output_column(spec.name) in sample.column_names
    ]
    if logged:
        answered = np.ones(sample.num_rows, dtype=bool)
        for spec in logged:
            valid = pc.is_valid(sample.column(output_column(spec.name)))
            answered &= valid.to_numpy(zero_copy_only=False)
        if answered.any():
            rows = sample.filter(pa.array(answered))
            outputs = {
                spec.name: tensor_column(rows.column(output_column(spec.name)), spec)
                for spec in logged
            }
            classes, top = batch_predictions(outputs)
            if classes is not None:
                prediction[answered] = classes
            if top is not None:
                confidence[answered] = top
    table = pa.table(columns)
    for name, values in (("prediction", prediction), ("confidence", confidence)):
        table = table.append_column(name, pa.array(values, mask=np.isnan(values)))
    return table
