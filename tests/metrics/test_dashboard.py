"""docs/grafana/modelapi-dashboard.json: every PromQL expression in it names only metrics that modelapi exports
(the catalog), histograms by their ``_bucket``/``_sum``/``_count`` series, and every metric has a panel.

(tests/e2e/test_prometheus.py also runs every expression against a real Prometheus, so they are valid PromQL.)
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from modelapi import metrics

DASHBOARD = Path(__file__).parents[2] / "docs" / "grafana" / "modelapi-dashboard.json"

FUNCTIONS = {
    # aggregations
    *("sum", "min", "max", "avg", "count", "stddev", "stdvar", "topk", "bottomk", "quantile", "count_values"),
    *("group",),
    # functions
    *("rate", "irate", "increase", "delta", "idelta", "deriv", "resets", "changes", "histogram_quantile"),
    *("time", "timestamp", "vector", "scalar", "abs", "ceil", "floor", "round", "clamp", "clamp_min", "clamp_max"),
    *("label_replace", "label_join", "absent", "absent_over_time", "sort", "sort_desc", "sgn", "ln", "log2"),
    *("avg_over_time", "max_over_time", "min_over_time", "sum_over_time", "count_over_time", "last_over_time"),
    *("quantile_over_time", "predict_linear", "day_of_week", "hour", "minute"),
}
KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless", "offset"}
KEYWORDS |= {"inf", "nan", "Inf", "NaN"}
GROUPING = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)")
IDENTIFIER = re.compile(r"(?<![\w.:$])[A-Za-z_:][\w:]*")


def dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return data


def panels(items: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in items:
        yield panel
        yield from panels(panel.get("panels", []))


def expressions(board: dict[str, Any]) -> list[tuple[str, str]]:
    """(where, PromQL) for every panel target and every query variable (``label_values(EXPR, label)``: EXPR)."""
    found = []
    for panel in panels(board["panels"]):
        for target in panel.get("targets", []):
            found.append((f"panel {panel['title']!r} target {target['refId']}", target["expr"]))
    for var in board["templating"]["list"]:
        if var["type"] != "query":
            continue
        query = var["query"]["query"] if isinstance(var["query"], dict) else var["query"]
        m = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", query.strip())
        assert m, f"variable {var['name']}: only label_values(expression, label) is checked here: {query}"
        found.append((f"variable {var['name']}", m.group(1)))
    return found


def metric_names(expr: str) -> set[str]:
    """The metric names an expression selects (strings, matchers, ranges, groupings and variables removed)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    text = re.sub(r"\{[^{}]*\}", " ", text)
    text = re.sub(r"\[[^\[\]]*\]", " ", text)
    text = GROUPING.sub(" ", text)
    text = re.sub(r"\$\{?\w+\}?", " ", text)
    names = set()
    for m in IDENTIFIER.finditer(text):
        word = m.group()
        if word in KEYWORDS:
            continue
        if text[m.end() :].lstrip().startswith("("):
            assert word in FUNCTIONS, f"unknown PromQL function {word!r} in {expr}"
            continue
        names.add(word)
    return names


def series_names() -> dict[str, str]:
    """Every series name modelapi exposes -> its family (histograms: the _bucket, _sum and _count series)."""
    out = {}
    for spec in metrics.families().specs:
        if spec.type == "histogram":
            out.update({spec.name + suffix: spec.name for suffix in ("_bucket", "_sum", "_count")})
        else:
            out[spec.name] = spec.name
    return out


def test_the_extraction_sees_every_metric_of_an_expression() -> None:
    expr = (
        'histogram_quantile(0.99, sum by (le, model) (rate(modelapi_request_duration_seconds_bucket{model=~"$model",'
        ' code!="2xx"}[$__rate_interval]))) / ignoring (code) group_left sum(up{job="a{b}"} offset 5m) > 0'
    )
    assert metric_names(expr) == {"modelapi_request_duration_seconds_bucket", "up"}
    with pytest.raises(AssertionError, match="unknown PromQL function"):
        metric_names("frobnicate(modelapi_requests_total)")


def test_every_expression_names_only_metrics_that_exist() -> None:
    known = series_names()
    exprs = expressions(dashboard())
    assert len(exprs) >= 20
    for where, expr in exprs:
        names = metric_names(expr)
        assert names, f"{where}: no metric in {expr}"
        unknown = names - known.keys()
        assert not unknown, f"{where}: {sorted(unknown)} are not in modelapi.metrics.catalog: {expr}"


def test_every_metric_has_a_panel() -> None:
    used = {name for _, expr in expressions(dashboard()) for name in metric_names(expr)}
    known = series_names()
    families = {spec.name for spec in metrics.families().specs}
    missing = families - {known[name] for name in used if name in known}
    assert not missing, f"the catalog has metrics the dashboard does not show: {sorted(missing)}"


def test_panels_use_the_datasource_variable() -> None:
    board = dashboard()
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    wanted = {"type": "prometheus", "uid": "${datasource}"}
    ids = []
    for panel in panels(board["panels"]):
        ids.append(panel["id"])
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == wanted, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == wanted, (panel["title"], target["refId"])
    for var in variables.values():
        if var["type"] == "query":
            assert var["datasource"] == wanted, var["name"]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
