"""The request log read back as it lies in the store: ``rayfleet validate --data``
on a day's folder, ``rayfleet batch``'s reader on the same, and ``rayfleet
reference build`` refreshing a version's reference from it. Logs are written by
the router's HTTP app over the demo's digits, in process."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import date
from pathlib import Path

import numpy as np
import pyarrow.dataset as pads
import pytest
from starlette.testclient import TestClient

from rayfleet.cli.demo import build_demo_store, digits_split
from rayfleet.cli.main import main
from rayfleet.cli.reference import first_day
from rayfleet.platform.config.spec import parse_spec
from rayfleet.platform.config.store import ModelStore
from rayfleet.platform.errors import ConfigError
from rayfleet.platform.ingress.http import build_http_app
from rayfleet.platform.requestlog import RequestLog, StoreSink
from rayfleet.platform.scoring import plan_batch, score_table, split_scored
from rayfleet.platform.serving.inprocess import InProcessBackend, load_runners
from rayfleet.platform.serving.service import InferenceService
from rayfleet.platform.validation.compare import reference_features

ROWS = digits_split()[1][:120]


@pytest.fixture(scope="module")
def logged(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A demo store whose request log holds 30 requests of 4 digits to v1 (all of
    them: sample_rate 1), and the day's folder."""
    root = tmp_path_factory.mktemp("store")
    build_demo_store(str(root))
    spec = parse_spec(
        {
            "store": str(root),
            "request_log": {"enabled": True, "sample_rate": 1.0},
            "models": [{"name": "digits", "versions": [{"name": "v1"}]}],
        }
    )
    store = ModelStore(spec.store)
    manifests = {"digits": {"v1": store.manifest("digits", "v1")}}
    log = RequestLog(
        spec.request_log,
        {("digits", "v1"): manifests["digits"]["v1"].signature},
        StoreSink(store),
        "router-a",
    )
    runners = load_runners(spec, manifests, placement=None)
    service = InferenceService(
        spec, manifests, InProcessBackend(runners), request_log=log
    )
    with TestClient(build_http_app(service)) as client:
        for start in range(0, len(ROWS), 4):
            rows = ROWS[start : start + 4]
            body = {
                "inputs": [
                    {
                        "name": "input",
                        "datatype": "FP32",
                        "shape": list(rows.shape),
                        "data": rows.ravel().tolist(),
                    }
                ]
            }
            answer = client.post(
                "/v2/models/digits/infer",
                json=body,
                headers={"x-request-id": f"req-{start // 4}"},
            )
            assert answer.status_code == 200
    assert log.close(30)
    [day] = (root / "_logs" / "digits" / "v1").iterdir()
    return root, day


def test_the_log_is_one_row_per_digit_with_its_request(
    logged: tuple[Path, Path],
) -> None:
    _, day = logged
    table = pads.dataset(str(day), format="parquet").to_table()
    assert table.num_rows == len(ROWS)
    assert table.column("request_id").to_pylist()[:6] == ["req-0"] * 4 + ["req-1"] * 2
    assert set(table.column("status").to_pylist()) == {200}
    np.testing.assert_array_equal(
        np.stack(table.column("input").to_numpy(zero_copy_only=False)), ROWS
    )


def test_validate_reads_a_day_of_log_as_it_is(
    logged: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root, day = logged
    report = tmp_path / "report.json"
    argv = ["validate", "--store", str(root), "--model", "digits"]
    argv += ["--candidate", "v2", "--baseline", "v1", "--quiet", "--json", str(report)]
    assert main([*argv, "--data", str(day)]) == 0
    assert json.loads(report.read_text())["rows"] == len(ROWS)
    assert "digits/v2 vs v1: PASSED" in capsys.readouterr().out
    # The version's whole log, every day (a `date` column comes with it), too.
    assert main([*argv, "--data", str(day.parent)]) == 0
    assert json.loads(report.read_text())["rows"] == len(ROWS)


class Probabilities:
    """A runtime answering the first ten pixels as probabilities."""

    def predict(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        scores = np.asarray(inputs["input"])[:, :10].astype(np.float32)
        return {"label": scores.argmax(axis=1), "probabilities": scores}


def test_batch_reads_a_day_of_log_as_it_is(logged: tuple[Path, Path]) -> None:
    # `rayfleet batch` runs on Ray Data; its reader and scorer are these.
    root, day = logged
    dataset = pads.dataset(str(day), format="parquet")
    signature = ModelStore(str(root)).manifest("digits", "v2").signature
    plan = plan_batch(
        "digits", [("v2", signature)], dataset.schema, passthrough=["request_id"]
    )
    assert [(b.columns, b.list_column) for b in plan.bindings] == [(("input",), True)]
    assert plan.read_columns == ["input", "request_id"]
    table = dataset.to_table(columns=plan.read_columns)
    scored = score_table(table, plan, [Probabilities()], np.random.default_rng(0))
    good, bad, stats = split_scored(scored, plan)
    assert (good.num_rows, bad.num_rows, stats.rows) == (len(ROWS), 0, len(ROWS))
    np.testing.assert_array_equal(
        good.column("label").to_numpy(), ROWS[:, :10].argmax(axis=1)
    )
    assert good.column("request_id").to_pylist()[-1] == "req-29"


def test_reference_build_refreshes_the_reference_from_the_log(
    logged: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    root, _ = logged
    store = ModelStore(str(root))
    before = store.reference("digits", "v1")
    assert before is not None and before.num_rows != 50
    argv = ["reference", "build", "digits", "v1", "--store", str(root), "--rows", "50"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert f"digits/v1: 50 of {len(ROWS)} logged rows" in out
    after = store.reference("digits", "v1")
    assert after is not None and after.num_rows == 50
    # The layout the Validator's drift test reads: 64 features, as the router
    # summarizes a request.
    features = reference_features(after)
    assert list(features) == [f"f{i}" for i in range(64)]
    assert all(
        any((row == ROWS).all(axis=1)) for row in np.stack(list(features.values()), 1)
    )


def test_reference_build_without_a_log_says_so(
    logged: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    root, _ = logged
    argv = ["reference", "build", "digits", "v3", "--store", str(root)]
    assert main(argv) == 2
    assert "no request log of digits/v3" in capsys.readouterr().err
    assert main([*argv, "--since", "2999-01-01"]) == 2


def test_days_count_back_from_today_or_start_at_since() -> None:
    def today() -> date:
        return date(2026, 11, 30)

    assert first_day(1, None, today) == date(2026, 11, 30)
    assert first_day(7, None, today) == date(2026, 11, 24)
    assert first_day(7, date(2026, 1, 2), today) == date(2026, 1, 2)
    with pytest.raises(ConfigError, match="--days"):
        first_day(0, None, today)
