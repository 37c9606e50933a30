from __future__ import annotations

import json
import re
from html.parser import HTMLParser

import numpy as np

from rayfleet.platform.thresholds import GateResult, Verdict
from rayfleet.platform.validation.drift import feature_drift
from rayfleet.platform.validation.report import OfflineReport, RunSummary


def _report(name: str = "v<2>", passed: bool = True) -> OfflineReport:
    rng = np.random.default_rng(0)
    drift = feature_drift(
        {"f0": rng.normal(size=100)}, {"f0": rng.normal(size=100) + float(not passed)}
    )
    latency = Verdict.PASS if passed else Verdict.FAIL
    gates = (
        GateResult("agreement", 0.95, 0.9, "min", Verdict.PASS),
        GateResult("model_p99_ratio", 3.0, 2.0, "max", latency, "noisy & slow"),
    )
    return OfflineReport(
        passed=passed,
        failures=[gate.describe() for gate in gates if not gate.passed],
        gates=gates,
        rows=100,
        batch_size=10,
        candidate=RunSummary(name, 0.9, 1.0, 3.0, 1.2, 10, {0: 60, 1: 40}),
        baseline=RunSummary("v1", 0.91, 1.0, 1.0, 1.0, 10, {0: 50, 2: 50}),
        agreement=0.95,
        model_p50_ratio=1.0,
        model_p99_ratio=3.0,
        prediction_js=0.3,
        prediction_chi_square_pvalue=1e-5,
        prediction_psi=None,
        input_drift=drift,
    )


class _Collector(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.links: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.links += [v or "" for k, v in attrs if k in ("href", "src")]


def test_gate_descriptions() -> None:
    failed = GateResult("agreement", 0.5, 0.9, "min", Verdict.FAIL)
    assert failed.describe() == "agreement 0.5 < min 0.9"
    js = GateResult("prediction_js", 0.01, 0.1, "max", Verdict.PASS)
    assert js.describe() == "prediction_js 0.01 <= max 0.1"
    missing = GateResult("x", None, 1.0, "max", Verdict.FAIL, "not measurable")
    assert missing.describe() == "x fail: not measurable"


def test_gates_serialise_with_verdict_and_json_safe_values() -> None:
    infinite = GateResult("model_p99_ratio", float("inf"), 2.0, "max", Verdict.FAIL)
    assert infinite.to_dict() == {
        "name": "model_p99_ratio",
        "value": None,
        "threshold": 2.0,
        "bound": "max",
        "verdict": "fail",
        "passed": False,
        "detail": "",
    }
    report = json.loads(json.dumps(_report().to_dict()))
    assert [g["verdict"] for g in report["gates"]] == ["pass", "pass"]
    assert (report["model_p50_ratio"], report["model_p99_ratio"]) == (1.0, 3.0)


def test_html_is_self_contained_and_escaped() -> None:
    page = _report(passed=False).to_html()
    parser = _Collector()
    parser.feed(page)
    assert parser.links == [] and "script" not in parser.tags
    assert "v&lt;2&gt;" in page and "v<2>" not in page
    assert "noisy &amp; slow" in page
    assert parser.tags.count("table") == 4  # gates, accuracy, classes, drift
    assert "FAILED" in page and re.search(r"-1\.0 points", page)
    # Every class either version predicted has a row.
    for label in ("0", "1", "2"):
        assert f"<td>{label}</td>" in page


def test_dict_is_json_safe() -> None:
    payload = json.loads(json.dumps(_report().to_dict(), allow_nan=False))
    assert payload["candidate"]["classes"] == {"0": 60, "1": 40}
    assert payload["prediction_psi"] is None and payload["passed"] is True
    assert payload["gates"][1]["detail"] == "noisy & slow"
