"""Pre-deploy validation of a stored version against another, before any traffic.

``rayfleet validate`` and the Validator's ``POST /-/validations`` both call
:func:`validate_versions`: load both versions from the store in this process, run
them on a dataset (the team's own test set, or the candidate's reference data) and
judge the candidate with :class:`~rayfleet.platform.validation.offline.OfflineGates`.

The dataset is a Parquet file or folder. A column named like the model's one
input (a number or a list of numbers per row, as ``rayfleet batch`` reads it, and
as the request log writes it) is the input, and the other columns are left alone;
otherwise its feature columns (every column but ``target``, ``prediction`` and
``confidence``, in order, or those named) are stacked into the input. A ``target``
column, when present, gives the labels for the accuracy gate.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.fs as pafs

from rayfleet.platform.config.signature import TensorSpec
from rayfleet.platform.config.spec import VersionSpec
from rayfleet.platform.config.store import Manifest, ModelStore
from rayfleet.platform.errors import ConfigError, StoreError
from rayfleet.platform.protocol.datatypes import numpy_dtype
from rayfleet.platform.runtimes import load_runtime
from rayfleet.platform.validation.columns import is_tensor_column, tensor_column
from rayfleet.platform.validation.compare import reference_features
from rayfleet.platform.validation.offline import OfflineGates, validate_offline
from rayfleet.platform.validation.report import OfflineReport

__all__ = ["LABEL_COLUMN", "validate_versions"]

LABEL_COLUMN = "target"

Progress = Callable[[int, int], None]


def _single_input(manifest: Manifest, where: str) -> str:
    inputs = manifest.signature.inputs
    if len(inputs) != 1:
        raise ConfigError(
            f"{where} takes {len(inputs)} inputs; offline validation feeds one input "
            "built from the table's feature columns"
        )
    return inputs[0].name


def _read_dataset(data: str, input_spec: TensorSpec | None) -> pa.Table:
    """The Parquet file or folder at ``data``; with ``input_spec``, when it has a
    column that feeds that input, only that column and the labels are read."""
    try:
        fs, path = pafs.FileSystem.from_uri(data) if "://" in data else (None, data)
        dataset = pads.dataset(
            path, filesystem=fs, format="parquet", partitioning="hive"
        )
        columns = None
        if input_spec is not None and is_tensor_column(dataset.schema, input_spec):
            names = dataset.schema.names
            columns = [n for n in (input_spec.name, LABEL_COLUMN) if n in names]
        return dataset.to_table(columns=columns)
    except (OSError, ValueError) as error:
        raise ConfigError(f"cannot read {data}: {error}") from error


def validate_versions(
    store: ModelStore,
    model: str,
    candidate: str,
    baseline: str,
    *,
    data: str | None = None,
    feature_columns: Sequence[str] | None = None,
    gates: OfflineGates | None = None,
    batch_size: int = 64,
    progress: Progress | None = None,
) -> OfflineReport:
    """Run ``candidate`` and ``baseline`` of ``model`` on ``data`` and judge.

    ``data`` is a Parquet file or folder, by URI (any pyarrow filesystem) or
    path: a request log's day folder as it is, for one; without it, the
    candidate's ``reference.parquet``. Raises :class:`ConfigError` for a missing
    version, dataset or a model this cannot feed.
    """
    manifests = {v: store.manifest(model, v) for v in (candidate, baseline)}
    input_name = _single_input(manifests[candidate], f"{model}/{candidate}")
    if _single_input(manifests[baseline], f"{model}/{baseline}") != input_name:
        raise ConfigError(f"{candidate} and {baseline} take differently named inputs")
    spec = manifests[candidate].signature.input(input_name)
    if data is None:
        table = store.reference(model, candidate)
        if table is None:
            raise StoreError(
                f"{model}/{candidate} has no reference.parquet; pass --data"
            )
    else:
        table = _read_dataset(data, spec if feature_columns is None else None)
    if feature_columns is None and is_tensor_column(table.schema, spec):
        rows = tensor_column(table.column(input_name), spec)
    else:
        columns = reference_features(table, feature_columns)
        if not columns:
            raise ConfigError("the dataset has no feature columns")
        rows = np.stack(list(columns.values()), axis=1)
    rows = rows.astype(numpy_dtype(spec.datatype))
    labels = (
        table.column(LABEL_COLUMN).to_numpy()
        if LABEL_COLUMN in table.column_names
        else None
    )
    runtimes = {
        version: load_runtime(
            manifests[version],
            store.fetch(model, version),
            VersionSpec(name=version),
            model=model,
        )
        for version in (candidate, baseline)
    }
    reference_table = store.reference(model, baseline)
    return validate_offline(
        runtimes[candidate],
        runtimes[baseline],
        rows,
        labels,
        input_name=input_name,
        batch_size=batch_size,
        gates=gates or OfflineGates(),
        progress=progress,
        reference=(
            reference_features(reference_table) if reference_table is not None else None
        ),
        candidate_name=f"{model}/{candidate}",
        baseline_name=f"{model}/{baseline}",
    )
