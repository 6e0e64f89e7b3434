"""The observer seam: a subscriber is handed the events whose method it overrides, and only those."""

from __future__ import annotations

import logging

import pytest

from modelapi.events import BatchRun, Events, Observer, RequestFinished, RequestRejected, RequestStarted
from modelapi.heap import HeapFreezer


def test_an_observer_of_model_versions_only_leaves_the_per_request_events_off() -> None:
    events = Events(HeapFreezer())
    assert not events.active and not events.sampling

    class Counting(Observer):
        def request_finished(self, event: object) -> None:
            pass

    events.subscribe(Counting())
    assert events.active


def test_a_handler_set_on_an_observer_instance_is_called() -> None:
    seen: list[object] = []
    observer = Observer()
    observer.request_finished = seen.append  # type: ignore[method-assign]
    events = Events(observer)
    assert events.active
    events.request_finished("event")  # type: ignore[arg-type]
    assert seen == ["event"]


def test_a_failing_subscriber_is_logged_and_the_others_still_hear_every_event(caplog: pytest.LogCaptureFixture) -> None:
    class Broken(Observer):
        def request_started(self, event: RequestStarted) -> None:
            raise RuntimeError("boom")

        def request_finished(self, event: RequestFinished) -> None:
            raise RuntimeError("boom")

        def batch_run(self, event: BatchRun) -> None:
            raise RuntimeError("boom")

        def request_rejected(self, event: RequestRejected) -> None:
            raise RuntimeError("boom")

    class Recording(Observer):
        def __init__(self) -> None:
            self.seen: list[object] = []

        def request_started(self, event: RequestStarted) -> None:
            self.seen.append(event)

        def request_finished(self, event: RequestFinished) -> None:
            self.seen.append(event)

        def batch_run(self, event: BatchRun) -> None:
            self.seen.append(event)

        def request_rejected(self, event: RequestRejected) -> None:
            self.seen.append(event)

    recording = Recording()
    events = Events(Broken(), recording)
    started = RequestStarted("m", "1", "rest", None)
    batch = BatchRun("m", "1", 1, 1, 0.001)
    finished = RequestFinished("m", "1", "rest", 200, 1, 0.0, 0.001, 0.002, None)
    rejected = RequestRejected("m", "rest", "overloaded", 503)
    sent: list[object] = [started, batch, finished, rejected]
    with caplog.at_level(logging.ERROR, logger="modelapi.events"):
        events.request_started(started)
        events.batch_run(batch)
        events.request_finished(finished)
        events.request_rejected(rejected)
    assert recording.seen == sent
    assert [r.getMessage() for r in caplog.records] == [
        f"observer Broken failed on {type(event).__name__}" for event in sent
    ]
    assert all(r.exc_info is not None for r in caplog.records)  # with the traceback
    events.unsubscribe(recording)
    events.request_finished(finished)
    assert recording.seen == sent  # an unsubscribed observer hears nothing more
