"""What the shipped Grafana dashboard and Prometheus rules read, and what a
``/metrics`` page exports: pure, for the unit test (on a rendered page) and the
integration test (on a live one).

Metric names are taken from the PromQL itself, never from a list kept by hand:
:func:`metric_names` finds every ``rayfleet_*`` identifier once string literals
and comments are gone, so a label value or a regex that happens to spell a metric
name is not one. What a page exports comes from
``prometheus_client``'s parser, by family type, so a counter with no sample yet
still exports its ``_total``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from prometheus_client.parser import text_string_to_metric_families

__all__ = [
    "DASHBOARD",
    "RULES",
    "Selector",
    "Series",
    "balanced",
    "dashboard_queries",
    "exported_series",
    "grouping_labels",
    "load_dashboard",
    "load_rules",
    "metric_names",
    "named_metrics",
    "rule_expressions",
    "selectors",
]

ROOT = Path(__file__).resolve().parents[1]
DASHBOARD = ROOT / "deploy" / "grafana" / "rayfleet.json"
RULES = ROOT / "deploy" / "prometheus" / "rules.yaml"

# String literals in the three PromQL quotings, and comments to the end of the
# line, in one alternation: whichever starts first wins, so a quote inside a
# comment or a '#' inside a string is read as what it is.
_STRINGS_AND_COMMENTS = re.compile(
    r'"(?:[^"\\]|\\.)*"' r"|'(?:[^'\\]|\\.)*'" r"|`[^`]*`" r"|#[^\n]*"
)
# Not preceded by a name character: `my_rayfleet_x` names no rayfleet metric.
_NAME = re.compile(r"(?<![A-Za-z0-9_:])rayfleet_[A-Za-z0-9_:]*")
_SELECTOR = re.compile(r"(?<![A-Za-z0-9_:])(rayfleet_[A-Za-z0-9_:]*)\s*\{([^}]*)\}")
_MATCHER = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)\s*(?:=~|!~|!=|=)")
_GROUPING = re.compile(
    r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)"
)
_PAIRS = {")": "(", "]": "[", "}": "{"}

# The series each family type exposes, as PromQL names them (OpenMetrics types).
_SUFFIXES = {
    "counter": ("_total",),
    "gauge": ("",),
    "histogram": ("_bucket", "_sum", "_count"),
    "gaugehistogram": ("_bucket", "_gsum", "_gcount"),
    "summary": ("", "_sum", "_count"),
    "info": ("_info",),
    "stateset": ("",),
    "unknown": ("",),
}


@dataclass(frozen=True)
class Selector:
    """A metric name with the label names its matchers use."""

    name: str
    labels: frozenset[str]


@dataclass(frozen=True)
class Series:
    """What a page shows of one series name: its samples' label names and how
    many samples it has."""

    labels: frozenset[str]
    samples: int


def _code(expr: str) -> str:
    """``expr`` with string literals and comments blanked out."""
    return _STRINGS_AND_COMMENTS.sub(" ", expr)


def metric_names(expr: str) -> set[str]:
    """The ``rayfleet_*`` series an expression reads."""
    return set(_NAME.findall(_code(expr)))


def selectors(expr: str) -> list[Selector]:
    """Each ``rayfleet_*`` selector in ``expr`` that has label matchers."""
    return [
        Selector(name, frozenset(_MATCHER.findall(body)))
        for name, body in _SELECTOR.findall(_code(expr))
    ]


def grouping_labels(expr: str) -> set[str]:
    """Label names in ``by``, ``without``, ``on``, ``ignoring`` and ``group_*``."""
    code = _code(expr)
    return {
        label.strip()
        for group in _GROUPING.findall(code)
        for label in group.split(",")
        if label.strip()
    }


def balanced(expr: str) -> bool:
    """Whether brackets pair up outside strings and comments, and every string
    is closed."""
    code = _code(expr)
    if any(quote in code for quote in "\"'`"):
        return False
    stack: list[str] = []
    for char in code:
        if char in "([{":
            stack.append(char)
        elif char in _PAIRS and (not stack or stack.pop() != _PAIRS[char]):
            return False
    return not stack


def exported_series(text: str) -> dict[str, Series]:
    """Every series name a Prometheus text page exports, by name, with what its
    samples show (nothing for a family without samples)."""
    labels: dict[str, set[str]] = {}
    counts: dict[str, int] = {}
    for family in text_string_to_metric_families(text):
        for suffix in _SUFFIXES.get(family.type, ("",)):
            labels.setdefault(family.name + suffix, set())
        for sample in family.samples:
            labels.setdefault(sample.name, set()).update(sample.labels)
            counts[sample.name] = counts.get(sample.name, 0) + 1
    return {
        name: Series(frozenset(found), counts.get(name, 0))
        for name, found in labels.items()
    }


def load_dashboard(path: Path = DASHBOARD) -> dict[str, Any]:
    """The dashboard's JSON model."""
    loaded: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return loaded


def load_rules(path: Path = RULES) -> dict[str, Any]:
    """The rule file as YAML data."""
    loaded: dict[str, Any] = yaml.safe_load(path.read_text(encoding="utf-8"))
    return loaded


def _exprs(node: Any) -> Iterator[str]:
    """Every ``expr`` string, at any depth: targets of panels, of panels in
    collapsed rows, of annotations."""
    if isinstance(node, Mapping):
        for key, value in node.items():
            if key == "expr" and isinstance(value, str):
                yield value
            else:
                yield from _exprs(value)
    elif isinstance(node, list):
        for item in node:
            yield from _exprs(item)


def dashboard_queries(dashboard: Mapping[str, Any]) -> list[str]:
    """Every query in a dashboard: each ``expr`` and each query variable's
    query (the plain string, or the ``query`` of the editor's object form)."""
    queries = list(_exprs(dashboard))
    for variable in dashboard.get("templating", {}).get("list", []):
        if variable.get("type") != "query":
            continue
        query = variable.get("query")
        if isinstance(query, Mapping):
            query = query.get("query")
        queries += [text for text in (query, variable.get("definition")) if text]
    return queries


def rule_expressions(rules: Mapping[str, Any]) -> dict[str, str]:
    """Each alerting or recording rule's expression, by its name."""
    return {
        rule.get("alert") or rule["record"]: rule["expr"]
        for group in rules["groups"]
        for rule in group["rules"]
    }


def named_metrics(queries: Iterable[str]) -> set[str]:
    """The ``rayfleet_*`` series any of ``queries`` reads."""
    return set().union(*(metric_names(query) for query in queries))
