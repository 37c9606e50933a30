"""A version's reference rebuilt from its request log, in the layout the
Validator's drift test reads."""

from __future__ import annotations

from datetime import date, datetime, timezone
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from rayfleet.platform.config.signature import Signature
from rayfleet.platform.config.spec import RequestLogSpec
from rayfleet.platform.config.store import (
    MANIFEST,
    REFERENCE,
    Manifest,
    ModelStore,
    PythonEntry,
)
from rayfleet.platform.errors import StoreError
from rayfleet.platform.requestlog.reference import build_reference
from rayfleet.platform.requestlog.writer import RequestLog, StoreSink
from rayfleet.platform.validation.compare import reference_features
from rayfleet.platform.validation.observation import batch_predictions, summarize_batch
from tests.unit.platform.requestlog.test_table import DIGITS, digits

IMAGES = Signature.model_validate(
    {
        "inputs": [{"name": "image", "datatype": "FP32", "shape": [-1, 3, 4, 4]}],
        "outputs": [{"name": "label", "datatype": "INT64", "shape": [-1]}],
    }
)


def day(n: int) -> float:
    """Noon UTC of 2026-11-{n}."""
    return datetime(2026, 11, n, 12, tzinfo=timezone.utc).timestamp()


def make_store(root: Path) -> ModelStore:
    for model, signature in (("digits", DIGITS), ("images", IMAGES)):
        folder = root / model / "v1"
        folder.mkdir(parents=True)
        manifest = Manifest(
            runtime="python", signature=signature, python=PythonEntry(callable="m:f")
        )
        (folder / MANIFEST).write_text(manifest.to_json())
    return ModelStore(str(root))


def log_days(store: ModelStore, requests: dict[int, int]) -> dict[str, np.ndarray]:
    """Log ``requests[d]`` digits requests of 5 rows on 2026-11-d; the inputs and
    outputs logged, in order; the last request of each day failed."""
    now = [0.0]
    log = RequestLog(
        RequestLogSpec(enabled=True, sample_rate=1.0),
        {("digits", "v1"): DIGITS},
        StoreSink(store),
        "r",
        clock=lambda: now[0],
    )
    inputs, labels = [], []
    for d, count in requests.items():
        now[0] = day(d)
        for n in range(count):
            x, y = digits(5, seed=100 * d + n)
            failed = n == count - 1
            log.record(
                f"{d}-{n}",
                "digits",
                "v1",
                500 if failed else 200,
                1.0,
                1.0,
                x,
                None if failed else y,
            )
            inputs.append(x["input"])
            labels.append(np.full(5, np.nan) if failed else y["label"])
        assert log.flush(30)
    log.close(10)
    return {"input": np.concatenate(inputs), "label": np.concatenate(labels)}


def test_the_reference_is_the_logged_inputs_summarized_as_requests_are(
    tmp_path: Path,
) -> None:
    store = make_store(tmp_path)
    logged = log_days(store, {28: 3, 29: 4})
    built = build_reference(store, "digits", "v1", since=date(2026, 11, 1), rows=1000)
    assert (built.logged_rows, built.parts) == (35, 2)
    assert built.days == (date(2026, 11, 28), date(2026, 11, 29))
    table = built.table
    assert table.column_names == [
        *(f"f{i}" for i in range(64)),
        "prediction",
        "confidence",
    ]
    # All rows, in the order logged: the summaries the router makes of them.
    expected = summarize_batch({"input": logged["input"]})
    assert expected is not None
    features = reference_features(table)
    np.testing.assert_allclose(np.stack(list(features.values()), axis=1), expected)
    np.testing.assert_array_equal(
        table.column("prediction").to_numpy(), logged["label"]
    )
    confidence = table.column("confidence").to_pylist()
    # The failed requests' rows have no prediction.
    assert confidence[10:15] == [None] * 5 and None not in confidence[:10]
    assert table.column("prediction").null_count == 10


def test_days_before_since_are_left_out_and_rows_sampled(tmp_path: Path) -> None:
    store = make_store(tmp_path)
    logged = log_days(store, {27: 6, 28: 20})
    built = build_reference(store, "digits", "v1", since=date(2026, 11, 28), rows=30)
    assert (built.logged_rows, built.table.num_rows) == (100, 30)
    # Every row sampled is one of the 28th's, each at most once.
    day_28 = summarize_batch({"input": logged["input"][30:]})
    assert day_28 is not None
    sampled = np.stack([built.table.column(f"f{i}").to_numpy() for i in range(64)], 1)
    matches = [np.flatnonzero((day_28 == row).all(axis=1)) for row in sampled]
    assert all(len(m) == 1 for m in matches)
    assert len({int(m[0]) for m in matches}) == 30
    again = build_reference(store, "digits", "v1", since=date(2026, 11, 28), rows=30)
    assert again.table.equals(built.table)  # seeded


def test_a_version_without_a_log_is_a_clear_error(tmp_path: Path) -> None:
    store = make_store(tmp_path)
    with pytest.raises(
        StoreError, match="no request log of digits/v1 since 2026-11-01"
    ):
        build_reference(store, "digits", "v1", since=date(2026, 11, 1))
    log_days(store, {2: 1})
    with pytest.raises(StoreError, match="holds date=2026-11-02 to date=2026-11-02"):
        build_reference(store, "digits", "v1", since=date(2026, 11, 3))


def test_images_are_summarized_by_their_statistics(tmp_path: Path) -> None:
    store = make_store(tmp_path)
    log = RequestLog(
        RequestLogSpec(enabled=True, sample_rate=1.0),
        {("images", "v1"): IMAGES},
        StoreSink(store),
        "r",
    )
    images = np.random.default_rng(0).random((3, 3, 4, 4), dtype=np.float32)
    log.record(
        "a",
        "images",
        "v1",
        200,
        1.0,
        1.0,
        {"image": images},
        {"label": np.array([1, 2, 3])},
    )
    log.close(10)
    today = datetime.now(timezone.utc).date()
    built = build_reference(store, "images", "v1", since=today)
    summary = summarize_batch({"image": images})
    assert summary is not None and summary.shape == (3, 4)
    np.testing.assert_allclose(
        np.stack([built.table.column(f"f{i}").to_numpy() for i in range(4)], 1),
        summary,
        rtol=1e-6,
    )
    assert built.table.column("prediction").to_pylist() == [1.0, 2.0, 3.0]


def test_it_is_written_where_the_validator_reads_it(tmp_path: Path) -> None:
    store = make_store(tmp_path)
    log_days(store, {30: 2})
    built = build_reference(store, "digits", "v1", since=date(2026, 11, 30))
    uri = store.write_reference("digits", "v1", built.table)
    assert uri == str(tmp_path / "digits" / "v1" / REFERENCE)
    reread = store.reference("digits", "v1")
    assert reread is not None and reread.equals(built.table)
    assert pq.read_table(uri).num_rows == 10
    assert [
        p.name for p in (tmp_path / "digits" / "v1").iterdir() if p.name.startswith(".")
    ] == []
    with pytest.raises(StoreError, match="no version 'v9'"):
        store.write_reference("digits", "v9", built.table)


def test_predictions_are_those_the_outputs_give() -> None:
    # The reference's prediction is batch_predictions' class id: the label.
    _, outputs = digits(4, 0)
    classes, _ = batch_predictions(outputs)
    assert classes is not None
    np.testing.assert_array_equal(classes, outputs["label"])
