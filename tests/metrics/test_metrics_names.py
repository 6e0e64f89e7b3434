"""Every metric follows Prometheus' naming conventions and docs/observability.md tables every one."""

from __future__ import annotations

import re
from pathlib import Path

from helpers.metrics import types
from modelapi import metrics
from modelapi.events import BatchRun, ModelStateChanged, RequestFinished, RequestRejected, RequestStarted
from modelapi.metrics.catalog import Spec

DOC = Path(__file__).parents[2] / "docs" / "observability.md"


def specs() -> list[Spec]:
    return metrics.families().specs


def test_names_follow_the_conventions() -> None:
    found = specs()
    assert len(found) == len({s.name for s in found}) >= 20
    for spec in found:
        assert re.fullmatch(r"modelapi_[a-z_]+", spec.name), spec.name
        assert "__" not in spec.name and not spec.name.endswith("_")
        assert (spec.type == "counter") == spec.name.endswith("_total"), spec.name
        assert not re.search(r"_(ms|milliseconds|minutes|kb|mb|percent)(_|$)", spec.name), spec.name
        if spec.type == "histogram" and spec.name != "modelapi_batch_rows":
            assert spec.name.endswith("_seconds"), spec.name
        if re.search(r"duration|_time|cpu|queue_s|compute", spec.name):
            assert spec.name.endswith("_seconds"), spec.name
        if "memory" in spec.name:
            assert spec.name.endswith("_bytes"), spec.name
        assert all(re.fullmatch(r"[a-z]+", label) for label in spec.labels), spec.labels
        assert spec.help.strip()


def test_the_exposition_matches_the_specs() -> None:
    o = metrics.MetricsObserver()
    o.request_started(RequestStarted("m", "1", "v2", None))
    o.request_finished(RequestFinished("m", "1", "v2", 200, 1, 0.0, 0.0, 0.0, None))
    o.request_rejected(RequestRejected("m", "v2", "overloaded", 503))
    o.batch_run(BatchRun("m", "1", 1, 1, 0.0))
    o.model_state_changed(ModelStateChanged("m", "1", "READY", "LOADING"))
    o.model_state_changed(ModelStateChanged("m", "1", "UNAVAILABLE", "LOADING"))
    o.job_submitted("m")
    o.job_rows("m", 1)
    o.job_finished("m", "failed")
    metrics.watch_queues(lambda: {("m", "1"): 0})
    metrics.watch_jobs(lambda: {})
    metrics.refresh()
    exposed = types(metrics.render()[0])
    expected = {s.name.removesuffix("_total"): s.type for s in specs()}
    assert exposed == expected


def test_the_docs_table_every_metric_and_no_other() -> None:
    text = DOC.read_text()
    rows = dict(re.findall(r"^\| `(modelapi_[a-z_]+)` \| (\w+) \|", text, re.MULTILINE))
    assert rows == {s.name: s.type for s in specs()}
    mentioned = set(re.findall(r"modelapi_[a-z_]+", text))
    known = {s.name for s in specs()}
    suffixes = ("_bucket", "_sum", "_count")
    unknown = {m for m in mentioned if m not in known and not any(m.removesuffix(x) in known for x in suffixes)}
    assert not unknown, unknown
