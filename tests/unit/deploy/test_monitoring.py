"""deploy/grafana/rayfleet.json and deploy/prometheus/rules.yaml: well-formed, and
reading only series that the Validator's ``/metrics`` exports, with the labels it
gives them, on the page of a Validator that has seen a whole rollout (and, by name,
on that of one that has seen nothing)."""

from __future__ import annotations

import re
from typing import Any

import pytest

from rayfleet.platform.rollout.controller import ValidatorCore
from rayfleet.platform.rollout.state_store import MemoryStateStore
from rayfleet.platform.rollout.telemetry import render_metrics
from tests.monitoring import (
    Series,
    balanced,
    dashboard_queries,
    exported_series,
    grouping_labels,
    load_dashboard,
    load_rules,
    metric_names,
    named_metrics,
    rule_expressions,
    selectors,
)
from tests.unit.platform.rollout.test_controller import platform
from tests.unit.platform.rollout.test_history import T0
from tests.unit.platform.rollout.test_telemetry import rolled_out_core

ALERTS = [
    "RayfleetRollback",
    "RayfleetRolloutStalled",
    "RayfleetObservationsDropped",
    "RayfleetInputDriftOnStable",
    "RayfleetP99OverSLO",
    "RayfleetNoHealthyReplica",
    "RayfleetGpuVersionOnCpu",
    "RayfleetRequestLogDropping",
]
DURATION = re.compile(r"^[0-9]+[smhdwy]$")
TEMPLATE_LABELS = re.compile(r"\$labels\.([A-Za-z_][A-Za-z0-9_]*)")
LABEL_VALUES = re.compile(r"label_values\(\s*([^,]+),\s*([A-Za-z_][A-Za-z0-9_]*)\s*\)")
DASHBOARD = load_dashboard()
RULES = load_rules()
EXPRESSIONS = rule_expressions(RULES)
QUERIES = dashboard_queries(DASHBOARD)
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}


@pytest.fixture(scope="module")
def page() -> dict[str, Series]:
    core, now = rolled_out_core()
    return exported_series(render_metrics(core, now).decode())


def _rules() -> list[dict[str, Any]]:
    return [rule for group in RULES["groups"] for rule in group["rules"]]


def _panels() -> list[dict[str, Any]]:
    return [panel for panel in DASHBOARD["panels"] if panel["type"] != "row"]


def _labels_of(names: set[str], page: dict[str, Series]) -> set[str]:
    return set().union(*(page[name].labels for name in names))


# -- the rules -----------------------------------------------------------------


def test_the_rules_are_the_eight_alerts() -> None:
    assert [rule.get("alert") for rule in _rules()] == ALERTS


@pytest.mark.parametrize("rule", _rules(), ids=ALERTS)
def test_every_alert_says_when_how_bad_and_what(
    rule: dict[str, Any], page: dict[str, Series]
) -> None:
    assert set(rule) == {"alert", "expr", "for", "labels", "annotations"}
    assert balanced(rule["expr"])
    assert DURATION.match(rule["for"])
    assert rule["labels"]["severity"] in {"warning", "critical"}
    annotations = rule["annotations"]
    assert set(annotations) == {"summary", "description"}
    assert all(text.strip() for text in annotations.values())
    # Every label an annotation prints is one the alert's series carry.
    used = set(TEMPLATE_LABELS.findall(" ".join(annotations.values())))
    assert used and used <= _labels_of(metric_names(rule["expr"]), page)


# -- the dashboard ---------------------------------------------------------------


def test_the_dashboard_picks_its_data_source_model_and_version() -> None:
    assert DASHBOARD["schemaVersion"] == 39
    assert DASHBOARD["uid"] == "rayfleet"
    variables = {v["name"]: v for v in DASHBOARD["templating"]["list"]}
    assert list(variables) == ["datasource", "model", "version"]
    assert (variables["datasource"]["type"], variables["datasource"]["query"]) == (
        "datasource",
        "prometheus",
    )
    for name in ("model", "version"):
        variable = variables[name]
        assert variable["type"] == "query"
        assert variable["datasource"] == DATASOURCE
        match = LABEL_VALUES.fullmatch(variable["query"])
        assert match is not None and match.group(2) == name
        assert variable["definition"] == variable["query"]


def test_every_panel_queries_the_chosen_data_source() -> None:
    ids = [panel["id"] for panel in DASHBOARD["panels"]]
    assert len(ids) == len(set(ids))
    for panel in _panels():
        assert panel["datasource"] == DATASOURCE, panel["title"]
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        targets = panel["targets"]
        assert targets, panel["title"]
        assert len({t["refId"] for t in targets}) == len(targets), panel["title"]
        for target in targets:
            assert target["datasource"] == DATASOURCE, panel["title"]
            assert target["expr"].strip() and balanced(target["expr"])


def test_the_dashboard_shows_every_family_the_page_exports(
    page: dict[str, Series],
) -> None:
    # A histogram is shown by its buckets; its sum and count may go unread.
    families = {name for name in page if not name.endswith(("_sum", "_count"))}
    assert families - named_metrics(QUERIES) == set()


# -- both, against the page -------------------------------------------------------


def test_every_series_named_is_on_the_page_with_samples(
    page: dict[str, Series],
) -> None:
    named = named_metrics([*QUERIES, *EXPRESSIONS.values()])
    assert len(named) >= 15
    assert named - set(page) == set()
    assert {name for name in named if page[name].samples == 0} == set()


def test_every_series_named_is_on_the_page_of_a_validator_that_saw_nothing() -> None:
    # What the integration test finds on a live app, which has no pool and may
    # not have served yet: families without samples still name their series.
    core = ValidatorCore(platform(), "shop", MemoryStateStore(), {}, now=T0)
    page = exported_series(render_metrics(core, T0).decode())
    assert named_metrics([*QUERIES, *EXPRESSIONS.values()]) - set(page) == set()


def _named_queries() -> dict[str, str]:
    """Every query of both files, by where it is: a panel's title and target, a
    variable, an alert."""
    named = {
        f"{panel['title']}/{target['refId']}": target["expr"]
        for panel in _panels()
        for target in panel["targets"]
    }
    for variable in DASHBOARD["templating"]["list"][1:]:
        named[f"${variable['name']}"] = variable["query"]
    return named | EXPRESSIONS


def test_the_named_queries_are_all_the_queries() -> None:
    assert set(_named_queries().values()) == {*QUERIES, *EXPRESSIONS.values()}


@pytest.mark.parametrize(
    "query", list(_named_queries().values()), ids=list(_named_queries())
)
def test_every_label_named_is_one_the_series_carry(
    query: str, page: dict[str, Series]
) -> None:
    for selector in selectors(query):
        assert selector.labels <= page[selector.name].labels, selector
    carried = _labels_of(metric_names(query), page)
    assert grouping_labels(query) <= carried
    for _, label in LABEL_VALUES.findall(query):
        assert label in carried
