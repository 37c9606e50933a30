"""``rayfleet batch`` on a real local Ray Data: predictions, comparison, bad rows,
and output that never appears half written.

The module starts its own small Ray (or borrows one already running in this
session) rather than the suite's Serve app: batch jobs need no Serve.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

ray = pytest.importorskip("ray")

from rayfleet.cli.demo import DIGITS_SIGNATURE, build_demo_store  # noqa: E402
from rayfleet.cli.main import main  # noqa: E402
from rayfleet.deployments.scoring_job import REPORT_FILE, SUMMARY_FILE, score  # noqa: E402
from rayfleet.platform.config.spec import VersionSpec  # noqa: E402
from rayfleet.platform.config.store import ModelStore  # noqa: E402
from tests.models import write_python_version  # noqa: E402

pytestmark = pytest.mark.timeout(180)

PIXELS = [f"pixel_{i}" for i in range(64)]
# Small actors: two fit beside the read and write tasks on a 2-CPU Ray.
SPEC = VersionSpec(name="v1", num_cpus=0.5)

# A digits-shaped python model that sleeps a little per batch: a job slow enough
# to interrupt halfway.
SLOW_MODEL = textwrap.dedent(
    """
    import time

    import numpy as np


    def load(version_dir):
        def predict(inputs):
            time.sleep(0.5)
            rows = len(inputs["input"])
            return {
                "label": np.zeros(rows, dtype=np.int64),
                "probabilities": np.full((rows, 10), 0.1, dtype=np.float32),
            }

        return predict
    """
)


@pytest.fixture(scope="module")
def cluster() -> Iterator[str]:
    """This session's Ray if one runs, else a small one for this module."""
    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield str(ray.get_runtime_context().gcs_address)
    if started:
        ray.shutdown()


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("store")
    build_demo_store(str(root))
    write_python_version(
        root, "digits", "slow", source=SLOW_MODEL, signature=DIGITS_SIGNATURE
    )
    return root


@pytest.fixture(scope="module")
def digits(store: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The held-out digits as ``reference.parquet`` holds them, with an ``id``."""
    table = ModelStore(str(store)).reference("digits", "v1")
    assert table is not None
    table = table.append_column("id", pa.array(np.arange(table.num_rows)))
    path = tmp_path_factory.mktemp("data") / "digits.parquet"
    pq.write_table(table, path)
    return path


def onnx_predict(store: Path, version: str, x: np.ndarray) -> list[np.ndarray]:
    """What onnxruntime itself answers for ``x``, outside rayfleet."""
    path = store / "digits" / version / "model.onnx"
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return list(session.run(["label", "probabilities"], {"input": x}))


def read_output(folder: Path) -> pa.Table:
    return pq.read_table(folder).sort_by("id")


def test_predictions_equal_onnxruntime_from_columns_or_a_list(
    cluster: str, store: Path, digits: Path, tmp_path: Path
) -> None:
    table = pq.read_table(digits)
    x = np.stack([table.column(name).to_numpy() for name in PIXELS], axis=1)
    labels, probabilities = onnx_predict(store, "v1", x)

    summary = score(
        str(store),
        "digits",
        "v1",
        str(digits),
        str(tmp_path / "from-columns"),
        input_columns=["pixel_*"],
        passthrough=["id"],
        batch_size=100,
        spec=SPEC,
    )
    assert summary.passed and (summary.rows, summary.failed) == (540, 0)
    out = read_output(tmp_path / "from-columns")
    assert out.column_names == ["id", "label", "probabilities", "model_version"]
    np.testing.assert_array_equal(out.column("label").to_numpy(), labels)
    got = np.array(out.column("probabilities").to_pylist(), dtype=np.float32)
    np.testing.assert_array_equal(got, probabilities)
    assert set(out.column("model_version").to_pylist()) == {"v1"}
    files = sorted(p.name for p in (tmp_path / "from-columns").iterdir())
    assert {"_SUCCESS", SUMMARY_FILE} <= set(files)
    assert REPORT_FILE not in files  # no comparison, no report

    # The same images as one list column named like the model input.
    as_list = pa.table(
        {
            "id": table.column("id"),
            "input": pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1)), 64),
        }
    )
    pq.write_table(as_list, tmp_path / "lists.parquet")
    score(
        str(store),
        "digits",
        "v1",
        str(tmp_path / "lists.parquet"),
        str(tmp_path / "from-list"),
        passthrough=["id"],
        spec=SPEC,
    )
    again = read_output(tmp_path / "from-list")
    np.testing.assert_array_equal(again.column("label").to_numpy(), labels)


@pytest.mark.parametrize(("candidate", "agrees"), [("v2", True), ("v3", False)])
def test_compare_measures_agreement_with_the_validation_report(
    cluster: str,
    store: Path,
    digits: Path,
    tmp_path: Path,
    candidate: str,
    agrees: bool,
) -> None:
    output = tmp_path / "out"
    summary = score(
        str(store),
        "digits",
        "v1",
        str(digits),
        str(output),
        compare=candidate,
        input_columns=["pixel_*"],
        passthrough=["id"],
        spec=SPEC,
    )
    report = summary.report
    assert report is not None and report.rows == 540
    if agrees:
        assert report.agreement > 0.9
    else:
        assert report.agreement < 0.7
        assert any(f.startswith("agreement") for f in report.failures)
    assert report.candidate.accuracy is not None  # the table's target column

    out = read_output(output)
    agree = out.column("agree").to_numpy()
    assert agree.mean() == pytest.approx(report.agreement)
    table = pq.read_table(digits)
    x = np.stack([table.column(name).to_numpy() for name in PIXELS], axis=1)
    labels = onnx_predict(store, candidate, x)[0]
    np.testing.assert_array_equal(out.column("compare_label").to_numpy(), labels)
    np.testing.assert_array_equal(
        agree, out.column("label").to_numpy() == out.column("compare_label").to_numpy()
    )
    saved = json.loads((output / SUMMARY_FILE).read_text())
    assert saved["report"] == json.loads(json.dumps(report.to_dict()))
    assert "Offline validation of digits/" in (output / REPORT_FILE).read_text()


def bad_rows_table(digits: Path) -> pa.Table:
    """The digits as a list column, with 8 rows broken three ways."""
    table = pq.read_table(digits)
    x = np.stack([table.column(name).to_numpy() for name in PIXELS], axis=1)
    rows: list[list[float | None] | None] = [list(map(float, row)) for row in x]
    for index in (3, 50, 51):
        rows[index] = None
    for index in (7, 100, 200):
        rows[index] = rows[index][:60]  # type: ignore[index]
    for index in (9, 300):
        rows[index][5] = None  # type: ignore[index]
    return pa.table({"id": table.column("id"), "input": pa.array(rows)})


def test_bad_rows_go_to_the_error_file_and_the_rest_is_written(
    cluster: str, store: Path, digits: Path, tmp_path: Path
) -> None:
    pq.write_table(bad_rows_table(digits), tmp_path / "bad.parquet")
    output, errors = tmp_path / "out", tmp_path / "out.errors.jsonl"
    base = ["batch", str(tmp_path / "bad.parquet"), str(output), "--store", str(store)]
    base += ["--model", "digits", "--version", "v1", "--passthrough", "id"]
    base += ["--num-cpus", "0.5", "--quiet", "--address", cluster]

    assert main([*base, "--max-error-share", "0.02"]) == 0
    assert pq.read_table(output).num_rows == 532
    lines = [json.loads(line) for line in errors.read_text().splitlines()]
    reasons = {line["id"]: line["error"] for line in lines}
    assert sorted(reasons) == [3, 7, 9, 50, 51, 100, 200, 300]
    assert reasons[3] == "null in column 'input'"
    assert reasons[7] == "column 'input' holds 60 values; input 'input' takes 64"
    assert reasons[9] == "null inside the list in column 'input'"
    assert len(lines[0]["values"]["input"] or []) in (0, 60, 64)

    # Over the limit: exit 1, the error file says why, and no output at all.
    strict = tmp_path / "strict"
    assert main([*base[:2], str(strict), *base[3:], "--max-error-share", "0.01"]) == 1
    assert not strict.exists()
    assert len((tmp_path / "strict.errors.jsonl").read_text().splitlines()) == 8
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "bad.parquet",
        "out",
        "out.errors.jsonl",
        "strict.errors.jsonl",
    ]


INTERRUPTED_JOB = """
import sys
import ray
from rayfleet.deployments.scoring_job import score
from rayfleet.platform.config.spec import VersionSpec

ray.init(address=sys.argv[1], log_to_driver=False)
# One actor: 27 batches of half a second each. Ray Data writes this job's one
# output part as the scoring ends, about two seconds before the job commits
# its output: the window in which the test must see the part and kill the job.
score(sys.argv[2], "digits", "slow", sys.argv[3], sys.argv[4],
      input_columns=["pixel_*"], batch_size=20, bytes_per_file=1, concurrency=1,
      spec=VersionSpec(name="slow", num_cpus=0.5))
"""


def test_a_killed_job_leaves_no_output(
    cluster: str, store: Path, digits: Path, tmp_path: Path
) -> None:
    output = tmp_path / "out"
    command = [sys.executable, "-c", INTERRUPTED_JOB, cluster]
    log = tmp_path.parent / f"{tmp_path.name}.job.log"
    with log.open("wb") as written:
        job = subprocess.Popen(
            [*command, str(store), str(digits), str(output)],
            stdout=written,
            stderr=subprocess.STDOUT,
        )
    try:
        # Wait until the job has written parts into its staging folder...
        deadline = time.monotonic() + 90
        while not list(tmp_path.glob(".out.rayfleet-*/output/part-*.parquet")):
            assert job.poll() is None, (
                "the job ended before it was interrupted; its output ends:\n"
                + log.read_text(errors="replace")[-3000:]
            )
            assert time.monotonic() < deadline, "the job never wrote a part"
            # Often: the part is there for only about two seconds before the
            # commit, less on a busy machine.
            time.sleep(0.01)
    finally:
        # ...then kill it outright: no cleanup code runs.
        if job.poll() is None:
            os.kill(job.pid, signal.SIGKILL)
        job.wait()
    time.sleep(1)
    assert not output.exists()
    assert not (tmp_path / "out.errors.jsonl").exists()
    # What it left is the hidden staging folder, which readers of OUTPUT never see.
    assert [p.name[:14] for p in tmp_path.iterdir()] == [".out.rayfleet-"]
