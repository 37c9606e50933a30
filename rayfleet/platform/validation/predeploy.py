"""Pre-deploy validation of a stored version against another, before any traffic.

``rayfleet validate`` and the Validator's ``POST /-/validations`` both call
:func:`validate_versions`: load both versions from the store in this process, run
them on a dataset (the team's own test set, or the candidate's reference data) and
judge the candidate with :class:`~rayfleet.platform.validation.offline.OfflineGates`.

The dataset is a Parquet file. Its feature columns (every column but ``target``,
``prediction`` and ``confidence``, in order, or those named) are stacked into the
model's one input; a ``target`` column, when present, gives the labels for the
accuracy gate.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from rayfleet.platform.config.spec import VersionSpec
from rayfleet.platform.config.store import Manifest, ModelStore
from rayfleet.platform.errors import ConfigError, StoreError
from rayfleet.platform.protocol.datatypes import numpy_dtype
from rayfleet.platform.runtimes import load_runtime
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

    ``data`` is a Parquet URI (any pyarrow filesystem); without it, the
    candidate's ``reference.parquet``. Raises :class:`ConfigError` for a missing
    version, dataset or a model this cannot feed.
    """
    manifests = {v: store.manifest(model, v) for v in (candidate, baseline)}
    input_name = _single_input(manifests[candidate], f"{model}/{candidate}")
    if _single_input(manifests[baseline], f"{model}/{baseline}") != input_name:
        raise ConfigError(f"{candidate} and {baseline} take differently named inputs")
    if data is None:
        table = store.reference(model, candidate)
        if table is None:
            raise StoreError(
                f"{model}/{candidate} has no reference.parquet; pass --data"
            )
    else:
        try:
            fs, path = pafs.FileSystem.from_uri(data) if "://" in data else (None, data)
            table = pq.read_table(path, filesystem=fs)
        except (OSError, ValueError) as error:
            raise ConfigError(f"cannot read {data}: {error}") from error
    columns = reference_features(table, feature_columns)
    if not columns:
        raise ConfigError("the dataset has no feature columns")
    spec = manifests[candidate].signature.input(input_name)
    rows = np.stack(list(columns.values()), axis=1).astype(numpy_dtype(spec.datatype))
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
