"""The observer seam: a subscriber is handed the events whose method it overrides, and only those."""

from __future__ import annotations

from modelapi.events import Events, Observer
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
