"""MetricsObserver fed synthetic events: the samples a scrape shows."""

from __future__ import annotations

from pathlib import Path

import pytest

from helpers.metrics import matching, parse, types, value
from modelapi import metrics
from modelapi.events import BatchRun, ModelStateChanged, RequestFinished, RequestRejected, RequestStarted


def finished(status: int = 200, rows: int = 1, *, version: str = "1", protocol: str = "v2") -> RequestFinished:
    return RequestFinished("iris", version, protocol, status, rows, 0.002, 0.003, 0.006, None)


def scrape() -> dict:  # type: ignore[type-arg]
    body, content_type = metrics.render()
    assert content_type.startswith("text/plain; version=0.0.4")
    return parse(body)


def test_requests_by_status_class_rows_and_histograms() -> None:
    observer = metrics.MetricsObserver()
    for status, rows in [(200, 3), (200, 5), (404, 1), (422, 2), (503, 0), (499, 1)]:
        observer.request_started(RequestStarted("iris", "1", "v2", None))
        observer.request_finished(finished(status, rows))
    observer.request_finished(finished(200, 7, protocol="rest"))
    s = scrape()
    labels = {"model": "iris", "version": "1", "protocol": "v2"}
    assert value(s, "modelapi_requests_total", **labels, code="2xx") == 2
    assert value(s, "modelapi_requests_total", **labels, code="4xx") == 3
    assert value(s, "modelapi_requests_total", **labels, code="5xx") == 1
    assert value(s, "modelapi_requests_total", model="iris", version="1", protocol="rest", code="2xx") == 1
    assert value(s, "modelapi_rows_inferred_total", **labels) == 8  # answered requests only
    assert value(s, "modelapi_request_duration_seconds_count", **labels) == 6  # every outcome
    assert value(s, "modelapi_request_duration_seconds_sum", **labels) == pytest.approx(6 * 0.006)
    assert value(s, "modelapi_request_queue_seconds_count", **labels) == 2  # answered only
    assert value(s, "modelapi_request_compute_seconds_sum", **labels) == pytest.approx(2 * 0.003)
    assert value(s, "modelapi_request_duration_seconds_bucket", **labels, le="0.005") == 0
    assert value(s, "modelapi_request_duration_seconds_bucket", **labels, le="0.01") == 6
    assert value(s, "modelapi_requests_in_flight", model="iris", version="1") == 0


def test_in_flight_follows_started_and_finished() -> None:
    observer = metrics.MetricsObserver()
    for _ in range(3):
        observer.request_started(RequestStarted("iris", "2", "v2", "r"))
    observer.request_finished(finished(version="2"))
    assert value(scrape(), "modelapi_requests_in_flight", model="iris", version="2") == 2


def test_rejections_by_reason() -> None:
    observer = metrics.MetricsObserver()
    observer.request_rejected(RequestRejected("iris", "v2", "overloaded", 503))
    observer.request_rejected(RequestRejected("iris", "v2", "overloaded", 503))
    observer.request_rejected(RequestRejected(None, "openai", "unauthenticated", 401))
    s = scrape()
    assert value(s, "modelapi_requests_rejected_total", model="iris", protocol="v2", reason="overloaded") == 2
    # no model named: an empty label value, which Prometheus treats as no label
    assert value(s, "modelapi_requests_rejected_total", model="", protocol="openai", reason="unauthenticated") == 1


def test_batches_and_batch_rows() -> None:
    observer = metrics.MetricsObserver()
    for rows in (1, 3, 64, 2000):
        observer.batch_run(BatchRun("iris", "1", rows, 2, 0.01))
    s = scrape()
    mv = {"model": "iris", "version": "1"}
    assert value(s, "modelapi_batches_total", **mv) == 4
    assert value(s, "modelapi_batch_rows_sum", **mv) == 2068
    assert value(s, "modelapi_batch_rows_count", **mv) == 4
    assert value(s, "modelapi_batch_rows_bucket", **mv, le="1.0") == 1
    assert value(s, "modelapi_batch_rows_bucket", **mv, le="4.0") == 2
    assert value(s, "modelapi_batch_rows_bucket", **mv, le="1024.0") == 3
    assert value(s, "modelapi_batch_rows_bucket", **mv, le="+Inf") == 4
    les = {dict(k)["le"] for k in matching(s, "modelapi_batch_rows_bucket", **mv)}
    assert les == {*(f"{2.0**i}" for i in range(11)), "+Inf"}


def change(observer: metrics.MetricsObserver, version: str, state: str, previous: str | None) -> None:
    observer.model_state_changed(ModelStateChanged("iris", version, state, previous))


def states(version: str) -> dict[str, float]:
    found = matching(scrape(), "modelapi_model_state", model="iris", version=version)
    return {dict(k)["state"]: v for k, v in found.items()}


def counts(version: str) -> tuple[float | None, float | None, float | None]:
    s = scrape()
    mv = {"model": "iris", "version": version}
    return (
        value(s, "modelapi_model_loads_total", **mv),
        value(s, "modelapi_model_reloads_total", **mv),
        value(s, "modelapi_model_load_failures_total", **mv),
    )


def test_loads_reloads_failures_and_state() -> None:
    o = metrics.MetricsObserver()
    change(o, "1", "LOADING", None)
    assert states("1") == {"LOADING": 1, "READY": 0, "UNAVAILABLE": 0, "UNLOADING": 0, "UNLOADED": 0}
    change(o, "1", "READY", "LOADING")
    assert counts("1") == (1, None, None)  # the first load of the model
    assert states("1")["READY"] == 1

    # files changed: the same version loads again beside the old handle, which then drains and unloads
    change(o, "1", "LOADING", None)
    assert states("1")["READY"] == 1  # still served by the old handle
    change(o, "1", "READY", "LOADING")
    change(o, "1", "UNLOADING", "READY")
    change(o, "1", "UNLOADED", "UNLOADING")
    assert counts("1") == (2, 1, None)
    assert states("1") == {"LOADING": 0, "READY": 1, "UNAVAILABLE": 0, "UNLOADING": 0, "UNLOADED": 0}

    # a new version of a model that is served: a reload too
    change(o, "2", "LOADING", None)
    change(o, "2", "READY", "LOADING")
    assert counts("2") == (1, 1, None)

    # a broken version: a failure, UNAVAILABLE
    change(o, "3", "LOADING", None)
    change(o, "3", "UNAVAILABLE", "LOADING")
    assert counts("3") == (None, None, 1)
    assert states("3")["UNAVAILABLE"] == 1 and states("3")["LOADING"] == 0

    # a failed reload of a served version: counted, and the version still shows READY
    change(o, "2", "LOADING", None)
    change(o, "2", "UNAVAILABLE", "LOADING")
    assert counts("2") == (1, 1, 1)
    assert states("2")["READY"] == 1 and states("2")["UNAVAILABLE"] == 0

    # unloaded
    change(o, "1", "UNLOADING", "READY")
    assert states("1")["UNLOADING"] == 1 and states("1")["READY"] == 0
    change(o, "1", "UNLOADED", "UNLOADING")
    assert states("1") == {"LOADING": 0, "READY": 0, "UNAVAILABLE": 0, "UNLOADING": 0, "UNLOADED": 1}


def test_a_model_loaded_again_after_an_unload_is_a_reload() -> None:
    o = metrics.MetricsObserver()
    for state, previous in [("LOADING", None), ("READY", "LOADING"), ("UNLOADING", "READY"), ("UNLOADED", "UNLOADING")]:
        change(o, "1", state, previous)
    change(o, "1", "LOADING", None)
    change(o, "1", "READY", "LOADING")
    assert counts("1") == (2, 1, None)
    assert states("1")["READY"] == 1 and states("1")["UNLOADED"] == 0


def test_jobs() -> None:
    o = metrics.MetricsObserver()
    o.job_submitted("iris")
    o.job_submitted("iris")
    o.job_rows("iris", 1000)
    o.job_rows("iris", 24)
    o.job_finished("iris", "succeeded")
    o.job_finished("iris", "failed")
    s = scrape()
    assert value(s, "modelapi_jobs_submitted_total", model="iris") == 2
    assert value(s, "modelapi_jobs_rows_total", model="iris") == 1024
    assert value(s, "modelapi_jobs_finished_total", model="iris", state="succeeded") == 1
    assert value(s, "modelapi_jobs_finished_total", model="iris", state="failed") == 1


def test_types_in_the_exposition() -> None:
    o = metrics.MetricsObserver()
    o.request_started(RequestStarted("iris", "1", "v2", None))
    o.request_finished(finished())
    metrics.refresh()
    found = types(metrics.render()[0])
    assert found["modelapi_requests"] == "counter"
    assert found["modelapi_request_duration_seconds"] == "histogram"
    assert found["modelapi_requests_in_flight"] == "gauge"
    assert found["modelapi_process_cpu_seconds"] == "gauge"


def test_events_fan_out_reaches_the_observer() -> None:
    from modelapi.events import Events

    events = Events()
    events.subscribe(metrics.MetricsObserver())
    events.request_rejected(RequestRejected("iris", "v2", "rate_limited", 429))
    assert value(scrape(), "modelapi_requests_rejected_total", model="iris", protocol="v2", reason="rate_limited") == 1


def test_hidden_families_take_values_but_are_not_exposed(tmp_path: Path) -> None:
    """``setup(None, hide=...)``, as a ``modelapi worker`` calls it: the jobs gauges, which the servers sample from
    the jobs database, are not in the worker's scrape; its job counters are, with the server's names and labels."""
    from modelapi.worker import SERVERS_ONLY

    metrics.setup(None, hide=SERVERS_ONLY)
    observer = metrics.MetricsObserver()
    observer.job_rows("scorer", 30)
    observer.job_finished("scorer", "succeeded")
    metrics.families().jobs_queued.set(7)  # a sampler that ran anyway changes nothing exposed
    body, _ = metrics.render()
    s = parse(body)
    assert value(s, "modelapi_jobs_rows_total", model="scorer") == 30
    assert value(s, "modelapi_jobs_finished_total", model="scorer", state="succeeded") == 1
    assert "modelapi_jobs_queued" not in body.decode() and "modelapi_jobs_running" not in body.decode()
    assert {f.name for f in metrics.collect()} >= {"modelapi_jobs_rows", "modelapi_jobs_finished"}
    with pytest.raises(ValueError, match="single process"):
        metrics.setup(tmp_path / "metrics", hide=SERVERS_ONLY)
    metrics.setup(None, hide=["modelapi_no_such_thing"])
    for _ in range(2):  # the same error each time: the first left nothing registered
        with pytest.raises(ValueError, match="no modelapi metric"):
            metrics.families()
