"""tests/monitoring.py: names and labels read from PromQL, names read from a
Prometheus text page."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Summary,
    generate_latest,
)

from tests.monitoring import (
    Selector,
    Series,
    balanced,
    dashboard_queries,
    exported_series,
    grouping_labels,
    metric_names,
    selectors,
)

NAMES = st.from_regex(r"rayfleet_[a-z][a-z0-9_]{0,20}", fullmatch=True)


def _quoted(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


@given(name=NAMES, value=st.text(), other=NAMES)
def test_a_label_value_never_names_a_metric(name: str, value: str, other: str) -> None:
    # The value may spell a metric name, quotes and all: it is still a string.
    expr = (
        f"sum by (model) (rate({name}{{model=~{_quoted(value)}, "
        f"job={_quoted(other)}}}[5m])) > 0 # {other}"
    )
    assert metric_names(expr) == {name}
    assert selectors(expr) == [Selector(name, frozenset({"model", "job"}))]
    assert balanced(expr)


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        ("rayfleet_a_total", {"rayfleet_a_total"}),
        ("rate(rayfleet_a_total[5m]) / rate(rayfleet_b_total[5m])",
         {"rayfleet_a_total", "rayfleet_b_total"}),
        ("label_values(rayfleet_w{model=~\"$model\"}, version)", {"rayfleet_w"}),
        ("my_rayfleet_x + up{job='rayfleet_y'}", set()),
        ("histogram_quantile(0.99, sum by (le) (rate(rayfleet_l_bucket[1m])))",
         {"rayfleet_l_bucket"}),
        ("`rayfleet_raw` # rayfleet_comment \"quoted\"", set()),
    ],
)  # fmt: skip
def test_metric_names(expr: str, names: set[str]) -> None:
    assert metric_names(expr) == names


def test_grouping_labels_are_every_clause() -> None:
    expr = (
        "sum by (model, version) (a) / on (model) group_left (replica) b"
        " unless ignoring(code) c or without (le) d"
    )
    assert grouping_labels(expr) == {"model", "version", "replica", "code", "le"}


@pytest.mark.parametrize(
    ("expr", "ok"),
    [
        ("sum(rate(a[5m]))", True),
        ('a{x=")"}', True),
        ("# (\nb", True),
        ("sum(rate(a[5m])", False),
        ("a{x}]", False),
        ("rate(a[5m)]", False),
        ('a{x="open}', False),
    ],
)
def test_balanced(expr: str, ok: bool) -> None:
    assert balanced(expr) is ok


def test_a_page_exports_each_type_by_its_series_names() -> None:
    registry = CollectorRegistry()
    Counter("rayfleet_idle", "no samples yet", ["model"], registry=registry)
    Gauge("rayfleet_level", "a gauge", registry=registry).set(3)
    wait = Histogram("rayfleet_wait_seconds", "", buckets=(0.1, 1), registry=registry)
    wait.observe(0.2)
    Summary("rayfleet_size", "a summary", registry=registry)
    text = generate_latest(registry).decode()
    series = exported_series(text)
    # prometheus_client adds a _created series to counters, histograms and summaries.
    assert {
        name: entry for name, entry in series.items() if not name.endswith("_created")
    } == {
        "rayfleet_idle_total": Series(frozenset(), 0),
        "rayfleet_level": Series(frozenset(), 1),
        "rayfleet_wait_seconds_bucket": Series(frozenset({"le"}), 3),
        "rayfleet_wait_seconds_sum": Series(frozenset(), 1),
        "rayfleet_wait_seconds_count": Series(frozenset(), 1),
        "rayfleet_size": Series(frozenset(), 0),
        "rayfleet_size_sum": Series(frozenset(), 1),
        "rayfleet_size_count": Series(frozenset(), 1),
    }


def test_dashboard_queries_are_targets_and_query_variables() -> None:
    dashboard = {
        "templating": {
            "list": [
                {"type": "datasource", "query": "prometheus"},
                {"type": "query", "query": {"query": "label_values(m, model)"}},
                {"type": "custom", "query": "a,b"},
            ]
        },
        "panels": [
            {"type": "row", "panels": [{"targets": [{"expr": "rayfleet_in_row"}]}]},
            {"targets": [{"expr": "rayfleet_a"}, {"expr": "rayfleet_b"}]},
        ],
    }
    assert dashboard_queries(dashboard) == [
        "rayfleet_in_row",
        "rayfleet_a",
        "rayfleet_b",
        "label_values(m, model)",
    ]
