"""``rayfleet validate``: the demo's good canary passes, the bad one fails CI."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from rayfleet.cli.demo import build_demo_store
from rayfleet.cli.main import main
from rayfleet.platform.config.store import ModelStore
from rayfleet.platform.errors import ConfigError
from rayfleet.platform.validation.predeploy import validate_versions


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("store")
    build_demo_store(str(root))
    return root


def test_v2_passes_and_writes_reports(store: Path, tmp_path: Path) -> None:
    report_json, report_html = tmp_path / "r.json", tmp_path / "r.html"
    code = main(
        [
            "validate", "--store", str(store), "--model", "digits",
            "--candidate", "v2", "--baseline", "v1", "--quiet",
            "--json", str(report_json), "--html", str(report_html),
        ]
    )  # fmt: skip
    assert code == 0
    report = json.loads(report_json.read_text())
    assert report["passed"] is True
    assert report["rows"] == 540
    assert "<html" in report_html.read_text().lower()


def test_v3_fails_with_a_nonzero_exit(
    store: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(
        [
            "validate", "--store", str(store), "--model", "digits",
            "--candidate", "v3", "--baseline", "v1", "--quiet",
        ]
    )  # fmt: skip
    assert code == 1
    out = capsys.readouterr().out
    assert "FAILED" in out and "agreement" in out


def test_own_dataset_with_labels(store: Path, tmp_path: Path) -> None:
    data = tmp_path / "test.parquet"
    table = pq.read_table(store / "digits" / "v1" / "reference.parquet")
    pq.write_table(table.slice(0, 200), data)
    report = validate_versions(
        ModelStore(str(store)), "digits", "v2", "v1", data=str(data)
    )
    assert report.rows == 200 and report.passed


def test_missing_dataset_is_a_config_error(store: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        validate_versions(
            ModelStore(str(store)), "digits", "v2", "v1", data=str(tmp_path / "no")
        )
