from __future__ import annotations

import json
import re
from html.parser import HTMLParser

import numpy as np

from rayfleet.platform.validation.drift import feature_drift
from rayfleet.platform.validation.report import GateCheck, OfflineReport, RunSummary


def _report(name: str = "v<2>", passed: bool = True) -> OfflineReport:
    rng = np.random.default_rng(0)
    drift = feature_drift(
        {"f0": rng.normal(size=100)}, {"f0": rng.normal(size=100) + float(not passed)}
    )
    gates = (
        GateCheck("agreement", 0.95, 0.9, "min", True),
        GateCheck("p99_latency_ratio", 3.0, 2.0, "max", passed, "noisy & slow"),
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
        p50_ratio=1.0,
        p99_ratio=3.0,
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
    assert GateCheck("agreement", 0.5, 0.9, "min", False).describe() == (
        "agreement 0.5 < min 0.9"
    )
    assert GateCheck("js", 0.01, 0.1, "max", True).describe() == "js 0.01 <= max 0.1"
    assert GateCheck("x", None, 1.0, "max", True, "not measured").describe() == (
        "x: not measured"
    )


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
