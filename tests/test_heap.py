"""The heap freezer: long-lived objects frozen once models are loaded, refrozen after an unload, per burst."""

from __future__ import annotations

import asyncio
import gc
import time
import weakref
from collections.abc import Iterator

import pytest

from modelapi.events import Events, ModelStateChanged
from modelapi.heap import YOUNG_THRESHOLD, HeapFreezer, freeze


@pytest.fixture(autouse=True)
def _unfrozen() -> Iterator[None]:
    thresholds = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*thresholds)


def test_a_freeze_collects_the_young_generation_less_often() -> None:
    freeze()
    assert gc.get_threshold()[0] == YOUNG_THRESHOLD


class Cycle:
    def __init__(self) -> None:
        self.me = self


def test_a_frozen_object_is_skipped_by_collections_and_an_unfrozen_cycle_is_reclaimed() -> None:
    kept = Cycle()
    freeze()
    assert gc.get_freeze_count() > 0
    ref = weakref.ref(kept)
    del kept
    gc.collect()
    assert ref() is not None  # frozen: no collection looks at it
    freeze()  # what an unload does: unfreeze, collect, freeze again
    assert ref() is None


def test_a_burst_of_loads_freezes_once_after_the_last() -> None:
    async def burst() -> HeapFreezer:
        heap = HeapFreezer(delay_s=0.05)
        events = Events(heap)
        for version in ("1", "2", "3"):
            events.model_state_changed(ModelStateChanged("m", version, "READY", "LOADING"))
            await asyncio.sleep(0.01)
        assert heap.freezes == 0
        await asyncio.sleep(0.2)
        return heap

    heap = asyncio.run(burst())
    assert heap.freezes == 1
    assert gc.get_freeze_count() > 0


def test_states_that_change_nothing_long_lived_do_not_freeze() -> None:
    heap = HeapFreezer()
    for state in ("LOADING", "UNLOADING"):
        heap.model_state_changed(ModelStateChanged("m", "1", state, None))
    assert heap.freezes == 0


def test_the_servers_app_freezes_its_heap_once_the_models_load_and_an_embedded_app_does_not() -> None:
    from starlette.testclient import TestClient

    from modelapi.http.app import create_app
    from modelapi.settings import Settings
    from toymodels import Echo

    gc.unfreeze()
    with TestClient(create_app([Echo()], Settings(job_workers=0))):
        time.sleep(0.8)
        assert gc.get_freeze_count() == 0  # an app in someone else's program leaves their heap alone
    with TestClient(create_app([Echo()], Settings(job_workers=0), freeze_heap=True)):
        deadline = time.monotonic() + 10
        while gc.get_freeze_count() == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert gc.get_freeze_count() > 1000
