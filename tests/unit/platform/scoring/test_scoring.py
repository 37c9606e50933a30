"""The pure parts of batch scoring: plans, bad rows, statistics, atomic output."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

from rayfleet.platform.config.signature import Signature, TensorSpec
from rayfleet.platform.errors import ConfigError
from rayfleet.platform.scoring import (
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
from rayfleet.platform.validation.offline import OfflineGates

SIGNATURE = Signature(
    inputs=(TensorSpec(name="x", datatype="FP32", shape=(-1, 3)),),
    outputs=(
        TensorSpec(name="label", datatype="INT64", shape=(-1,)),
        TensorSpec(name="probabilities", datatype="FP32", shape=(-1, 2)),
    ),
)
SENTINEL = 666.0


class Sign:
    """Class 1 when a row's sum is positive (``flip``: when negative); raises on
    any row holding the sentinel."""

    def __init__(self, flip: bool = False) -> None:
        self.flip = flip
        self.calls = 0

    def predict(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.calls += 1
        x = inputs["x"]
        if (x == SENTINEL).any():
            raise ValueError("sentinel")
        total = x.sum(axis=1)
        positive = total < 0 if self.flip else total > 0
        probabilities = np.stack([~positive, positive], axis=1).astype(np.float32)
        return {"label": positive.astype(np.int64), "probabilities": probabilities}


def columns_table(rows: list[list[object]], **extra: list[object]) -> pa.Table:
    columns = {f"c{i}": [row[i] for row in rows] for i in range(3)}
    return pa.table({**columns, **extra})


def plan_for(table: pa.Table, compare: bool = False, **options: object) -> BatchPlan:
    versions = [("v1", SIGNATURE)] + ([("v2", SIGNATURE)] if compare else [])
    return plan_batch("m", versions, table.schema, **options)  # type: ignore[arg-type]


def score(
    table: pa.Table, plan: BatchPlan, *runtimes: Sign
) -> tuple[pa.Table, pa.Table, BatchStats]:
    scored = score_table(table, plan, runtimes or [Sign()], np.random.default_rng(0))
    assert scored.schema == plan.scored_schema
    return split_scored(scored, plan)


# Plans: which columns feed the input.


def test_patterns_stack_columns_in_table_order() -> None:
    table = pa.table({"id": [1], "c2": [0.0], "c0": [0.0], "c1": [0.0]})
    plan = plan_for(table, input_columns=["c*"], passthrough=["id"])
    (binding,) = plan.bindings
    assert binding.columns == ("c2", "c0", "c1")
    assert not binding.list_column
    assert plan.read_columns == ["c2", "c0", "c1", "id"]


def test_a_list_column_named_like_the_input() -> None:
    table = pa.table({"x": pa.array([[1.0, 2.0, 3.0]], pa.list_(pa.float64()))})
    (binding,) = plan_for(table).bindings
    assert binding.columns == ("x",)
    assert binding.list_column


def test_without_a_mapping_every_feature_column_as_validate_reads_them() -> None:
    table = pa.table(
        {
            "c0": [1.0],
            "c1": [2.0],
            "id": ["a"],
            "c2": [3.0],
            "target": [1],
            "prediction": [1],
            "confidence": [0.5],
        }
    )
    plan = plan_for(table, passthrough=["id"])
    assert plan.bindings[0].columns == ("c0", "c1", "c2")
    assert plan.label_column is None  # only a comparison reads labels
    assert plan_for(table, compare=True, passthrough=["id"]).label_column == "target"


def test_output_schema_one_column_per_output_and_version() -> None:
    table = columns_table([[1, 2, 3]], id=["a"])
    plan = plan_for(table, compare=True, passthrough=["id"])
    assert plan.output_schema == pa.schema(
        [
            ("id", pa.string()),
            ("label", pa.int64()),
            ("probabilities", pa.list_(pa.float32(), 2)),
            ("model_version", pa.string()),
            ("compare_label", pa.int64()),
            ("compare_probabilities", pa.list_(pa.float32(), 2)),
            ("compare_version", pa.string()),
            ("agree", pa.bool_()),
        ]
    )


@pytest.mark.parametrize(
    ("table", "options", "message"),
    [
        (pa.table({"a": [1.0], "b": [2.0]}), {}, "takes 3 numbers per row"),
        (columns_table([[1, 2, 3]]), {"input_columns": ["z*"]}, "no column matches"),
        (columns_table([[1, 2, 3]]), {"passthrough": ["id"]}, "no passthrough"),
        (
            columns_table([[1, 2, 3]], label=[1]),
            {"passthrough": ["label"]},
            r"output column\(s\) \['label'\] would appear twice",
        ),
        (
            pa.table({"x": [{"a": 1}]}),
            {"input_columns": ["x"]},
            "these hold other things",
        ),
        (pa.table({"y": [1.0]}), {"input_columns": []}, "no column feeds input"),
    ],
)
def test_plans_that_cannot_work_fail_before_any_row(
    table: pa.Table, options: dict[str, object], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        plan_for(table, **options)


def test_versions_must_take_the_same_inputs_and_batchable_tensors() -> None:
    other = Signature(
        inputs=(TensorSpec(name="x", datatype="FP32", shape=(-1, 4)),),
        outputs=SIGNATURE.outputs,
    )
    schema = columns_table([[1, 2, 3]]).schema
    with pytest.raises(ConfigError, match="take different inputs"):
        plan_batch("m", [("v1", SIGNATURE), ("v2", other)], schema)
    text = Signature(
        inputs=SIGNATURE.inputs,
        outputs=(TensorSpec(name="name", datatype="BYTES", shape=(-1,)),),
    )
    with pytest.raises(ConfigError, match="cannot be batch-scored"):
        plan_batch("m", [("v1", text)], schema)


# Scoring: good rows as the model says, bad rows with their reason.


def test_good_rows_get_the_models_outputs_and_version() -> None:
    rows = [[1, 2, 3], [-1, -2, -3], [0.5, -1, 0]]
    table = columns_table(rows, id=["a", "b", "c"])
    plan = plan_for(table, passthrough=["id"])
    good, errors, stats = score(table, plan)
    expected = Sign().predict({"x": np.array(rows, dtype=np.float32)})
    assert good.schema == plan.output_schema
    assert good.column("id").to_pylist() == ["a", "b", "c"]
    assert good.column("label").to_pylist() == expected["label"].tolist()
    probabilities = np.array(good.column("probabilities").to_pylist())
    np.testing.assert_array_equal(probabilities, expected["probabilities"])
    assert good.column("model_version").to_pylist() == ["v1"] * 3
    assert errors.num_rows == 0
    assert (stats.rows, stats.failed) == (3, 0)
    assert stats.tallies["v1"].classes == {1: 1, 0: 2}
    assert stats.tallies["v1"].batch_ms.count == 1


def test_bad_scalar_rows_go_to_the_errors_with_their_reason() -> None:
    table = pa.table(
        {
            "id": [1, 2, 3, 4],
            "c0": [1.0, None, 1.0, 1.0],
            "c1": ["2", "2", "two", "2"],
            "c2": [3, 3, 3, 3],
        }
    )
    good, errors, stats = score(table, plan_for(table, passthrough=["id"]))
    assert good.column("id").to_pylist() == [1, 4]
    assert errors.column("id").to_pylist() == [2, 3]
    assert errors.column("error").to_pylist() == [
        "null in column 'c0'",
        "'two' in column 'c1' is not a number",
    ]
    values = [json.loads(text) for text in errors.column("values").to_pylist()]
    assert values == [
        {"c0": None, "c1": "2", "c2": 3},
        {"c0": 1.0, "c1": "two", "c2": 3},
    ]
    assert (stats.rows, stats.failed) == (4, 2)
    assert stats.examples == errors.column("error").to_pylist()


def test_bad_list_rows_wrong_length_null_and_holes() -> None:
    lists = [[1.0, 2.0, 3.0], [1.0, 2.0], None, [1.0, None, 3.0], [-1.0, -1.0, -1.0]]
    table = pa.table({"id": list(range(5)), "x": pa.array(lists)})
    good, errors, _ = score(table, plan_for(table, passthrough=["id"]))
    assert good.column("id").to_pylist() == [0, 4]
    assert good.column("label").to_pylist() == [1, 0]
    assert errors.column("error").to_pylist() == [
        "column 'x' holds 2 values; input 'x' takes 3",
        "null in column 'x'",
        "null inside the list in column 'x'",
    ]


def test_fractions_for_an_integer_input_are_bad_rows_not_truncated() -> None:
    signature = Signature(
        inputs=(TensorSpec(name="x", datatype="INT64", shape=(-1, 3)),),
        outputs=SIGNATURE.outputs,
    )
    table = columns_table([[1.0, 2.0, 3.0], [1.5, 2.0, 3.0]])
    plan = plan_batch("m", [("v1", signature)], table.schema)
    good, errors, _ = score(table, plan)
    assert good.num_rows == 1
    assert errors.column("error").to_pylist() == ["1.5 in column 'c0' is no integer"]


def test_a_row_the_model_raises_on_fails_alone() -> None:
    table = columns_table([[1, 2, 3], [SENTINEL, 0, 0], [-1, -1, -1]], id=[0, 1, 2])
    model = Sign()
    good, errors, stats = score(table, plan_for(table, passthrough=["id"]), model)
    assert good.column("id").to_pylist() == [0, 2]
    assert good.column("label").to_pylist() == [1, 0]
    (reason,) = errors.column("error").to_pylist()
    assert reason == "m/v1 failed: ValueError: sentinel"
    assert model.calls == 1 + 3  # the batch, then each row alone
    # A retried batch's time is not a batch's time.
    assert stats.tallies["v1"].batch_ms.count == 0


def test_a_batch_of_only_bad_rows_keeps_the_schema() -> None:
    table = columns_table([[None, 1, 1]], id=[7])
    plan = plan_for(table, compare=True, passthrough=["id"])
    good, errors, stats = score(table, plan, Sign(), Sign())
    assert good.num_rows == 0 and good.schema == plan.output_schema
    assert errors.num_rows == 1 and stats.failed == 1 and stats.pairs == 0


def test_compare_marks_agreement_per_row_and_counts_it() -> None:
    rows = [[1, 1, 1], [-1, -1, -1], [0, 0, 0], [2, 2, 2]]
    table = columns_table(rows)
    plan = plan_for(table, compare=True)
    good, _, stats = score(table, plan, Sign(), Sign(flip=True))
    # Sums of 3, -3, 0, 6: the flipped model agrees only where the sum is 0.
    assert good.column("agree").to_pylist() == [False, False, True, False]
    assert good.column("compare_version").to_pylist() == ["v2"] * 4
    assert (stats.pairs, stats.agreeing) == (4, 1)


def test_statistics_travel_with_the_first_row_and_count_once() -> None:
    table = columns_table([[1, 1, 1], [None, 1, 1]], target=[1, 0])
    plan = plan_for(table, compare=True)
    rng = np.random.default_rng(0)
    batches = [score_table(table, plan, [Sign(), Sign()], rng) for _ in range(3)]
    # However the writers receive the rows, each batch's statistics count once.
    whole = pa.concat_tables(batches)
    halves = [split_scored(whole.slice(0, 3), plan), split_scored(whole.slice(3), plan)]
    stats = BatchStats.combine(part for _, _, part in halves)
    assert (stats.rows, stats.failed) == (6, 3)
    tally = stats.tallies["v1"]
    assert (tally.labelled, tally.correct) == (3, 3)
    assert sum(tally.classes.values()) == 3


# The comparison report: the validation module's own gates and drift.


def compared(flip: bool, rows: int = 400) -> tuple[BatchPlan, BatchStats]:
    rng = np.random.default_rng(1)
    data = rng.normal(size=(rows, 3))
    table = pa.table(
        {
            **{f"c{i}": data[:, i] for i in range(3)},
            "target": (data.sum(axis=1) > 0).astype(int),
        }
    )
    plan = plan_for(table, compare=True, total_rows=rows, drift_features=3)
    _, _, stats = score(table, plan, Sign(), Sign(flip=flip))
    return plan, stats


def test_report_of_a_version_that_agrees() -> None:
    plan, stats = compared(flip=False)
    reference = {f"f{i}": np.random.default_rng(2).normal(size=300) for i in range(3)}
    report = comparison_report(
        plan, stats, batch_size=400, gates=OfflineGates(), reference=reference
    )
    assert report is not None
    assert report.agreement == 1.0 and report.passed, report.failures
    assert report.baseline.name == "m/v1" and report.candidate.name == "m/v2"
    assert report.candidate.accuracy == 1.0
    assert report.prediction_js == pytest.approx(0.0)
    assert report.input_drift is not None and not report.input_drift.drifted
    json.dumps(report.to_dict())
    assert "m/v2 against m/v1: PASSED" in report.to_html()


def test_report_of_a_version_that_disagrees() -> None:
    plan, stats = compared(flip=True)
    report = comparison_report(plan, stats, batch_size=400, gates=OfflineGates())
    assert report is not None
    assert report.agreement < 0.1
    assert not report.passed
    assert any(failure.startswith("agreement") for failure in report.failures)
    assert report.input_drift is None


def test_no_report_without_pairs() -> None:
    table = columns_table([[1, 1, 1]])
    _, _, stats = score(table, plan_for(table))
    assert (
        comparison_report(plan_for(table), stats, batch_size=1, gates=OfflineGates())
        is None
    )


# The summary.


@pytest.mark.parametrize(("failed", "passed"), [(0, True), (10, True), (11, False)])
def test_summary_passes_up_to_the_error_limit(failed: int, passed: bool) -> None:
    summary = BatchSummary(
        model="m",
        version="v1",
        compare=None,
        input_uri="in",
        output_uri="out",
        errors_uri="out.errors.jsonl",
        rows=1000,
        failed=failed,
        seconds=2.0,
        max_error_share=0.01,
        examples=("null in column 'c0'",) if failed else (),
    )
    assert summary.passed is passed
    assert summary.rows_per_s == 500
    text = summary.describe()
    assert ("output: out" in text) is passed
    assert ("NOT written" in text) is not passed
    data = json.loads(json.dumps(summary.to_dict()))
    assert data["output"] == ("out" if passed else None)
    assert data["scored"] == 1000 - failed


# Output that appears whole or not at all.


def staged_folder(tmp_path: Path, text: str) -> Location:
    staged = Location.of(str(tmp_path / ".out.staging" / "output"))
    Path(staged.path).mkdir(parents=True)
    (Path(staged.path) / "part-00000.parquet").write_text(text)
    return staged


def test_commit_renames_into_place_and_marks_success(tmp_path: Path) -> None:
    final = Location.of(str(tmp_path / "out"))
    commit_folder(staged_folder(tmp_path, "new"), final, overwrite=False)
    assert sorted(p.name for p in Path(final.path).iterdir()) == [
        "_SUCCESS",
        "part-00000.parquet",
    ]
    assert not (tmp_path / ".out.staging" / "output").exists()


def test_commit_replaces_only_when_asked(tmp_path: Path) -> None:
    final = Location.of(str(tmp_path / "out"))
    Path(final.path).mkdir()
    (Path(final.path) / "old.parquet").write_text("old")
    with pytest.raises(ConfigError, match="already exists"):
        commit_folder(staged_folder(tmp_path, "new"), final, overwrite=False)
    assert (Path(final.path) / "old.parquet").exists()
    commit_folder(
        Location.of(str(tmp_path / ".out.staging" / "output")), final, overwrite=True
    )
    assert (Path(final.path) / "part-00000.parquet").read_text() == "new"
    assert not (Path(final.path) / "old.parquet").exists()
    assert sorted(p.name for p in (tmp_path / ".out.staging").iterdir()) == []


def test_commit_on_an_object_store_copies_then_marks_success() -> None:
    # pyarrow's in-memory filesystem has no atomic rename, as an object store.
    fs = pafs._MockFileSystem()
    staged = Location(
        fs, "bucket/.out.staging/output", "mock://bucket/.out.staging/output"
    )
    final = Location(fs, "bucket/out", "mock://bucket/out")
    fs.create_dir(staged.path)
    with fs.open_output_stream(f"{staged.path}/part-00000.parquet") as stream:
        stream.write(b"new")
    commit_folder(staged, final, overwrite=False)
    assert [f.name for f in final.files()] == ["_SUCCESS", "part-00000.parquet"]
    with pytest.raises(ConfigError, match="already exists"):
        commit_folder(staged, final, overwrite=False)


@pytest.mark.parametrize("name", ["errors.jsonl", "errors.parquet"])
def test_error_file_concatenates_parts_whole(tmp_path: Path, name: str) -> None:
    table = columns_table([[None, "1", 1], [1, "x", 1]], id=["a", "b"])
    plan = plan_for(table, passthrough=["id"])
    parts = []
    for index in range(2):
        _, errors, _ = score(table, plan)
        pq.write_table(errors, tmp_path / f"part-{index}.parquet")
        parts.append(Location.of(str(tmp_path / f"part-{index}.parquet")))
    final = Location.of(str(tmp_path / "out" / name))
    assert write_error_file(parts, final, plan.error_schema) == 4
    if name.endswith(".jsonl"):
        lines = [json.loads(line) for line in Path(final.path).read_text().splitlines()]
        assert [line["id"] for line in lines] == ["a", "b", "a", "b"]
        assert lines[1] == {
            "id": "b",
            "error": "'x' in column 'c1' is not a number",
            "values": {"c0": 1, "c1": "x", "c2": 1},
        }
    else:
        read = pq.read_table(final.path)
        assert read.schema == plan.error_schema and read.num_rows == 4
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [name]


def test_an_empty_error_file_when_nothing_failed(tmp_path: Path) -> None:
    plan = plan_for(columns_table([[1, 1, 1]]))
    final = Location.of(str(tmp_path / "errors.parquet"))
    assert write_error_file([], final, plan.error_schema) == 0
    assert pq.read_table(final.path).schema == plan.error_schema


def test_locations_keep_filesystem_options() -> None:
    location = Location.of("s3://bucket/preds?endpoint_override=127.0.0.1:9000")
    errors = location.sibling(f"{location.name}.errors.jsonl")
    assert (
        errors.uri == "s3://bucket/preds.errors.jsonl?endpoint_override=127.0.0.1:9000"
    )
    assert location.staging().name.startswith(".preds.rayfleet-")
