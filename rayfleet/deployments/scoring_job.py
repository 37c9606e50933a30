"""``rayfleet batch`` on Ray Data: read Parquet, score in an actor pool, write whole.

::

    read_parquet ──> map_batches(_Scorer: actor pool) ──> write_datasink(_Sink)
                                                             │ parts
    OUTPUT's hidden sibling  .{name}.rayfleet-{id}/  <───────┘
      output/part-*.parquet   errors/part-*.parquet
    then, on the driver: the error file, then OUTPUT moved (or copied) into place

Each actor loads the version (and the compared version) once and scores whole
batches; the writers split each batch into output rows and error rows and return
the batch statistics to the driver, which judges the error share and commits.
What is decided (column mapping, bad rows, statistics, the commit) lives in
:mod:`rayfleet.platform.scoring`; this module only wires it to Ray Data.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import ray
from ray.data import ActorPoolStrategy
from ray.data.block import Block, BlockAccessor
from ray.data.datasource import Datasink
from ray.data.datasource.datasink import WriteResult

from rayfleet.platform.config.spec import VersionSpec
from rayfleet.platform.config.store import ModelStore
from rayfleet.platform.errors import ConfigError
from rayfleet.platform.runtimes import Runtime, load_runtime, warm_up
from rayfleet.platform.scoring import (
    DEFAULT_BATCH_SIZE,
    BatchPlan,
    BatchStats,
    BatchSummary,
    Location,
    commit_folder,
    comparison_report,
    plan_batch,
    score_table,
    split_scored,
    write_error_file,
)
from rayfleet.platform.validation.compare import reference_features
from rayfleet.platform.validation.offline import OfflineGates
from rayfleet.platform.validation.predeploy import LABEL_COLUMN

__all__ = [
    "BYTES_PER_FILE",
    "REPORT_FILE",
    "SUMMARY_FILE",
    "score",
]

# Scored data a writer gathers per Parquet file: a few large files rather than one
# per batch, sized in bytes since rows range from a label to an embedding.
BYTES_PER_FILE = 128 * 1024 * 1024
# Beside the parts in a committed OUTPUT; Parquet readers skip names with "_".
SUMMARY_FILE = "_summary.json"
REPORT_FILE = "_report.html"


class _Scorer:
    """One actor of the pool: the versions' runtimes, loaded and warmed once."""

    def __init__(
        self,
        store_uri: str,
        plan: BatchPlan,
        specs: Sequence[VersionSpec],
        batch_size: int,
    ) -> None:
        store = ModelStore(store_uri)
        self.plan = plan
        self.runtimes: list[Runtime] = []
        for version, signature, spec in zip(
            plan.versions, plan.signatures, specs, strict=True
        ):
            manifest = store.manifest(plan.model, version)
            runtime = load_runtime(
                manifest, store.fetch(plan.model, version), spec, model=plan.model
            )
            warm_up(runtime, signature, batch_size)
            self.runtimes.append(runtime)
        # Seeded from the OS: each actor's sample priorities must be independent.
        self.rng = np.random.default_rng()

    def __call__(self, batch: pa.Table) -> pa.Table:
        return score_table(batch, self.plan, self.runtimes, self.rng)


class _Sink(Datasink[BatchStats]):
    """Writes each task's rows into the staging folder; returns its statistics.

    A task's files are named by its index, so a retried task overwrites its own
    parts instead of adding to them, and its statistics count once: Ray Data
    hands :meth:`on_write_complete` only the returns of tasks that finished.
    """

    def __init__(self, plan: BatchPlan, staging: Location, bytes_per_file: int) -> None:
        self.plan = plan
        self.staging = staging
        self.bytes_per_file = bytes_per_file
        self.stats = BatchStats()

    @property
    def min_bytes_per_write(self) -> int:
        return self.bytes_per_file

    def write(self, blocks: Iterable[Block], ctx: Any) -> BatchStats:
        name = f"part-{ctx.task_idx:05d}.parquet"
        stats = BatchStats()
        writers: dict[str, pq.ParquetWriter] = {}
        try:
            for block in blocks:
                table = BlockAccessor.for_block(block).to_arrow()
                good, bad, part = split_scored(table, self.plan)
                stats.merge(part)
                for folder, rows in (("output", good), ("errors", bad)):
                    if not rows.num_rows:
                        continue
                    if folder not in writers:
                        where = self.staging.child(folder).child(name)
                        writers[folder] = pq.ParquetWriter(
                            where.path, rows.schema, filesystem=where.fs
                        )
                    writers[folder].write_table(rows)
        finally:
            for writer in writers.values():
                writer.close()
        return stats

    def on_write_complete(self, write_result: WriteResult[BatchStats]) -> None:
        self.stats = BatchStats.combine(write_result.write_returns)


def _pool(concurrency: int | tuple[int, int] | None, spec: VersionSpec) -> Any:
    """The actor pool: ``concurrency`` actors (or a min-max range); by default
    from one up to as many as the cluster's GPUs or CPUs hold at the spec's size.

    Not all started at once: actors holding every CPU would leave none for the
    read and write tasks, and the job would wait forever (seen on 2 cores).
    Ray Data grows the pool while the other stages keep what they need.
    """
    if isinstance(concurrency, int):
        return ActorPoolStrategy(size=concurrency)
    if concurrency is not None:
        return ActorPoolStrategy(min_size=concurrency[0], max_size=concurrency[1])
    resources = ray.cluster_resources()  # type: ignore[no-untyped-call]
    if spec.num_gpus > 0:
        fits = resources.get("GPU", 0) / spec.num_gpus
    else:
        fits = resources.get("CPU", 1) / (spec.num_cpus or 1)
    size = max(1, math.floor(fits))
    return ActorPoolStrategy(min_size=1, max_size=size)


def score(
    store_uri: str,
    model: str,
    version: str,
    input_uri: str,
    output_uri: str,
    *,
    compare: str | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    concurrency: int | tuple[int, int] | None = None,
    spec: VersionSpec | None = None,
    input_columns: Sequence[str] | None = None,
    passthrough: Sequence[str] = (),
    label_column: str | None = LABEL_COLUMN,
    max_error_share: float = 0.01,
    errors_uri: str | None = None,
    overwrite: bool = False,
    gates: OfflineGates | None = None,
    bytes_per_file: int = BYTES_PER_FILE,
) -> BatchSummary:
    """Score the Parquet files at ``input_uri`` with ``model/version`` into a
    Parquet folder at ``output_uri``; any pyarrow filesystem URI or local path.

    The output holds the ``passthrough`` columns, the model's outputs (a list
    column for each output with more than one number per row) and
    ``model_version``. With ``compare``, the compared version's outputs too
    (``compare_`` before each name), ``compare_version`` and ``agree`` per row,
    and the offline report judging it against ``version`` in ``_summary.json``
    and ``_report.html`` beside the parts. ``input_columns`` (names or patterns
    such as ``pixel_*``) say which columns feed the input; see
    :mod:`rayfleet.platform.scoring` for how they are found otherwise.

    Bad rows go to ``errors_uri`` (default: ``OUTPUT.errors.jsonl`` beside the
    output; ``.parquet`` for Parquet) with their reason. The output is committed
    only when bad rows are at most ``max_error_share`` of all rows; either way
    the result is a :class:`BatchSummary` (``passed`` says which), and the error
    file is written. An exception or interruption leaves nothing at
    ``output_uri``.

    ``spec`` sizes the actors (``num_cpus``, fractional; ``num_gpus`` when
    above 0, with the CUDA provider for ONNX); ``concurrency`` fixes their number
    (or a ``(min, max)`` range) instead of fitting them to the cluster. Each
    writer gathers about ``bytes_per_file`` of scored data per Parquet file.
    Uses the running Ray, or starts a local one. On a cluster of several nodes,
    OUTPUT must be on storage every node sees (an object store, a shared mount).
    """
    began = time.perf_counter()
    store = ModelStore(store_uri)
    versions = [version] if compare is None else [version, compare]
    signatures = [(v, store.manifest(model, v).signature) for v in versions]
    output = Location.of(output_uri)
    errors = (
        Location.of(errors_uri)
        if errors_uri
        else output.sibling(f"{output.name}.errors.jsonl")
    )
    for target in (output, errors):
        if target.exists() and not overwrite:
            raise ConfigError(f"{target.uri} already exists; pass overwrite")
    source = Location.of(input_uri)
    try:
        dataset = ray.data.read_parquet(source.path, filesystem=source.fs)
        schema = dataset.schema().base_schema
    except (OSError, ValueError) as error:
        raise ConfigError(f"cannot read {input_uri}: {error}") from error
    reference, total_rows = None, None
    if compare is not None:
        table = store.reference(model, version)
        reference = None if table is None else reference_features(table)
        # From the files' footers: Ray Data's count() would run a job for it.
        total_rows = pads.dataset(
            source.path, filesystem=source.fs, format="parquet"
        ).count_rows()
    plan = plan_batch(
        model,
        signatures,
        schema,
        input_columns=input_columns,
        passthrough=passthrough,
        label_column=label_column,
        total_rows=total_rows,
        drift_features=len(reference or ()),
    )
    spec = spec or VersionSpec(name=version)
    specs = [spec.model_copy(update={"name": v}) for v in versions]
    staging = output.staging()
    try:
        for folder in ("output", "errors"):
            staging.fs.create_dir(staging.child(folder).path, recursive=True)
        scored = dataset.select_columns(plan.read_columns).map_batches(
            _Scorer,
            fn_constructor_kwargs={
                "store_uri": store.uri,
                "plan": plan,
                "specs": specs,
                "batch_size": batch_size,
            },
            batch_size=batch_size,
            batch_format="pyarrow",
            compute=_pool(concurrency, spec),
            num_cpus=spec.num_cpus,
            num_gpus=spec.num_gpus if spec.num_gpus > 0 else None,
        )
        sink = _Sink(plan, staging, bytes_per_file)
        scored.write_datasink(sink)
        stats = sink.stats
        summary = BatchSummary(
            model=model,
            version=version,
            compare=compare,
            input_uri=source.uri,
            output_uri=output.uri,
            errors_uri=errors.uri,
            rows=stats.rows,
            failed=stats.failed,
            seconds=time.perf_counter() - began,
            max_error_share=max_error_share,
            examples=tuple(stats.examples),
            report=comparison_report(
                plan,
                stats,
                batch_size=batch_size,
                gates=gates or OfflineGates(),
                reference=reference,
            ),
        )
        write_error_file(staging.child("errors").files(), errors, plan.error_schema)
        if summary.passed:
            _write_text(staging.child("output").child(SUMMARY_FILE), summary)
            commit_folder(staging.child("output"), output, overwrite=overwrite)
        return summary
    finally:
        staging.remove()


def _write_text(where: Location, summary: BatchSummary) -> None:
    """The summary as JSON, and the comparison report's page when there is one."""
    with where.fs.open_output_stream(where.path) as stream:
        stream.write(json.dumps(summary.to_dict(), indent=2).encode())
    if summary.report is not None:
        page = where.sibling(REPORT_FILE)
        with page.fs.open_output_stream(page.path) as stream:
            stream.write(summary.report.to_html().encode())
