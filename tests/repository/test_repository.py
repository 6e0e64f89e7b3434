"""Repository: serving a model repository directory: versions, labels, canary, broken versions, reloads, load and
unload on demand, shared state between workers, and the state events."""

from __future__ import annotations

import asyncio
import collections
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from helpers.repo import (
    EventLog,
    ModelRepo,
    index_of,
    label_of,
    repository,
    rows,
    skops_bytes,
    warmup_fails_skops_bytes,
)
from modelapi.errors import BadRequest, ModelLoadError, ModelNotFound, ModelNotReady
from modelapi.events import Events, ModelStateChanged, Observer
from modelapi.models.registry import load_model as real_load_model
from modelapi.repository.registry import Repository
from modelapi.repository.shared import SharedState
from modelapi.settings import Settings


@pytest.fixture
def repo(tmp_path: Path) -> ModelRepo:
    return ModelRepo(tmp_path / "models")


def settings(repo: ModelRepo, **extra: Any) -> Settings:
    return Settings(models=[str(repo.root)], **extra)


def answer(r: Repository, name: str, *first: float, **how: Any) -> str:
    """The label the version ``resolve`` picks gives to a row (the tag tells which artefact answered)."""
    handle = r.resolve(name, **how)
    return label_of(dict(handle.model.predict(rows(*(first or (1.0,))))))


def run(scenario: Callable[[], Any]) -> None:
    asyncio.run(scenario())


# versions, default, labels --------------------------------------------------------------------------------
def test_the_latest_version_is_served_by_default(repo: ModelRepo) -> None:
    for v in (1, 2, 3):
        repo.version("m", v, skops_bytes(f"v{v}"))

    async def scenario() -> None:
        r = repository(settings(repo))
        await r.start()
        assert index_of(r, "m") == {"3": ("READY", "")}
        assert r.resolve("m").version == "3" and answer(r, "m") == "v3-hi"
        with pytest.raises(ModelNotFound, match=r"model 'm' has no version '1'; its versions: 3"):
            r.resolve("m", version="1")
        await r.close()

    run(scenario)


@pytest.mark.parametrize(
    ("policy", "served"),
    [("{ latest = 2 }", ["2", "3"]), ('"all"', ["1", "2", "3"]), ("[1, 3]", ["1", "3"]), ("[2, 7]", ["2"])],
)
def test_version_policy_selects_what_is_served(repo: ModelRepo, policy: str, served: list[str]) -> None:
    for v in (1, 2, 3):
        repo.version("m", v, skops_bytes(f"v{v}"))
    repo.toml("m", f"version_policy = {policy}\n")

    async def scenario() -> None:
        r = repository(settings(repo))
        await r.start()
        assert sorted(index_of(r, "m")) == served
        assert r.entry("m").ready_versions() == served
        for v in served:
            assert answer(r, "m", version=v) == f"v{v}-hi"
        assert r.resolve("m").version == served[-1]  # no stable label: the highest ready version
        await r.close()

    run(scenario)


def test_stable_label_is_the_default_and_labels_resolve(repo: ModelRepo) -> None:
    for v in (1, 2, 3):
        repo.version("m", v, skops_bytes(f"v{v}"))
    repo.toml("m", 'version_policy = "all"\n[labels]\nstable = 2\nnext = 3\n')

    async def scenario() -> None:
        r = repository(settings(repo))
        await r.start()
        assert r.resolve("m").version == "2" and answer(r, "m") == "v2-hi"
        assert r.resolve("m", label="next").version == "3"
        assert r.resolve("m", label="stable").version == "2"
        assert r.resolve("m", version="1").version == "1"
        with pytest.raises(ModelNotFound) as info:
            r.resolve("m", label="nope")
        assert "no label 'nope'" in info.value.detail
        assert "stable (version 2)" in info.value.detail and "next (version 3)" in info.value.detail
        with pytest.raises(ModelNotFound) as info:
            r.resolve("m", version="9")
        assert "no version '9'" in info.value.detail and "its versions: 1, 2, 3" in info.value.detail
        with pytest.raises(ModelNotFound, match="no model named 'zzz'; served models: m"):
            r.resolve("zzz")
        await r.close()

    run(scenario)


def test_stable_label_on_a_version_that_is_not_ready_falls_back_to_the_highest(repo: ModelRepo) -> None:
    repo.version("m", 1, b"not a model")
    repo.version("m", 2, skops_bytes("v2"))
    repo.toml("m", 'version_policy = "all"\n[labels]\nstable = 1\n')

    async def scenario() -> None:
        r = repository(settings(repo))
        await r.start()
        assert r.resolve("m").version == "2"
        with pytest.raises(ModelNotReady, match="version 1 is unavailable"):
            r.resolve("m", label="stable")
        await r.close()

    run(scenario)


def test_a_version_that_is_loading_is_not_ready(repo: ModelRepo) -> None:
    repo.version("m", 1, skops_bytes("v1"))
    seen: list[str] = []

    async def scenario() -> None:
        r = repository(settings(repo))

        class WhileLoading(Observer):
            def model_state_changed(self, event: ModelStateChanged) -> None:
                if event.state == "LOADING":
                    for version in ("1", None):
                        try:
                            r.resolve("m", version)
                        except ModelNotReady as exc:
                            seen.append(exc.detail)

        r.events.subscribe(WhileLoading())
        await r.start()
        assert r.resolve("m").version == "1"
        await r.close()

    run(scenario)
    assert seen[0] == "model 'm' version 1 is loading"
    assert "model 'm' is not ready" in seen[1]


# canary ---------------------------------------------------------------------------------------------------
def test_canary_share_of_unversioned_calls(repo: ModelRepo) -> None:
    repo.version("m", 1, skops_bytes("v1"))
    repo.version("m", 2, skops_bytes("v2"))
    repo.toml("m", 'version_policy = "all"\ncanary_percent = 10\n[labels]\nstable = 1\ncanary = 2\n')

    async def scenario() -> None:
        r = repository(settings(repo), rng=random.Random(7))  # seeded: the share is exact, never flaky
        await r.start()
        picked = collections.Counter(r.resolve("m").version for _ in range(1000))
        assert set(picked) == {"1", "2"}
        assert 70 <= picked["2"] <= 130, picked
        # a version or a label asked for by name never goes to the canary
        assert {r.resolve("m", version="1").version for _ in range(200)} == {"1"}
        assert {r.resolve("m", label="stable").version for _ in range(200)} == {"1"}
        await r.close()

    run(scenario)


def test_a_canary_that_failed_to_load_takes_no_traffic(repo: ModelRepo) -> None:
    repo.version("m", 1, skops_bytes("v1"))
    repo.version("m", 2, b"corrupt")
    repo.toml("m", 'version_policy = "all"\ncanary_percent = 50\n[labels]\nstable = 1\ncanary = 2\n')

    async def scenario() -> None:
        r = repository(settings(repo))
        await r.start()
        assert {r.resolve("m").version for _ in range(200)} == {"1"}
        await r.close()

    run(scenario)


# broken versions ------------------------------------------------------------------------------------------
def test_broken_versions_never_take_traffic_and_say_why(repo: ModelRepo, tmp_path: Path) -> None:
    repo.version("corrupt", 1, b"PK\x03\x04 this is not a zip file")
    repo.version("warmup", 1, warmup_fails_skops_bytes())
    repo.version("good", 1, skops_bytes("good"))
    log = EventLog()

    async def scenario() -> None:
        r = repository(settings(repo), Events(log))
        await r.start()  # one good model is enough to start
        corrupt = index_of(r, "corrupt")["1"]
        warmup = index_of(r, "warmup")["1"]
        assert corrupt[0] == warmup[0] == "UNAVAILABLE"
        assert "corrupt/1/model.skops" in corrupt[1] and "skops" in corrupt[1]
        assert "ValueError" in warmup[1]
        for _state, reason in (corrupt, warmup):
            assert str(tmp_path) not in reason and str(tmp_path.resolve()) not in reason
        for name in ("corrupt", "warmup"):
            with pytest.raises(ModelNotReady, match=f"model '{name}' is not ready"):
                r.resolve(name)
            with pytest.raises(ModelNotReady, match="unavailable"):
                r.resolve(name, version="1")
        failures = [e for e in log.of(ModelStateChanged) if e.state == "UNAVAILABLE"]
        assert {e.model for e in failures} == {"corrupt", "warmup"}
        assert all(e.reason and str(tmp_path) not in e.reason for e in failures)
        assert answer(r, "good") == "good-hi"
        await r.close()

    run(scenario)


def test_nothing_loadable_fails_the_start_with_the_reasons(repo: ModelRepo, tmp_path: Path) -> None:
    repo.version("m", 1, warmup_fails_skops_bytes())

    async def scenario() -> None:
        r = repository(settings(repo))
        with pytest.raises(ModelLoadError) as info:
            await r.start()
        assert "no model could be loaded" in info.value.detail and "m: version 1: ValueError" in info.value.detail
        await r.close()

    run(scenario)


def test_a_broken_new_version_leaves_the_old_one_serving(repo: ModelRepo, tmp_path: Path) -> None:
    repo.version("m", 1, skops_bytes("v1"))

    async def scenario() -> None:
        r = repository(settings(repo))
        await r.start()
        repo.version("m", 2, warmup_fails_skops_bytes())
        await r.reconcile()
        assert index_of(r, "m")["1"] == ("READY", "")
        state, reason = index_of(r, "m")["2"]
        assert state == "UNAVAILABLE" and "ValueError" in reason and str(tmp_path) not in reason
        assert answer(r, "m") == "v1-hi"
        # the same broken files are not loaded again on every look; fixed files are
        await r.reconcile()
        assert index_of(r, "m")["2"][0] == "UNAVAILABLE"
        repo.replace(repo.root / "m" / "2" / "model.skops", skops_bytes("v2"))
        await r.reconcile()
        assert index_of(r, "m") == {"2": ("READY", "")}
        assert answer(r, "m") == "v2-hi"
        await r.close()

    run(scenario)


def test_an_unusable_newest_version_directory_is_shown_and_the_previous_serves(repo: ModelRepo) -> None:
    repo.version("m", 1, skops_bytes("v1"))

    async def scenario() -> None:
        r = repository(settings(repo))
        await r.start()
        staging = repo.root / "m" / "2.tmp"
        staging.mkdir()
        (staging / "a.skops").write_bytes(skops_bytes("v2"))
        (staging / "b.skops").write_bytes(skops_bytes("v2"))
        staging.rename(repo.root / "m" / "2")
        await r.reconcile()
        state, reason = index_of(r, "m")["2"]
        assert state == "UNAVAILABLE" and "several model files" in reason
        assert index_of(r, "m")["1"] == ("READY", "") and answer(r, "m") == "v1-hi"
        await r.close()

    run(scenario)


def test_a_corrupt_replacement_of_the_served_artefact_keeps_the_old_model(repo: ModelRepo, tmp_path: Path) -> None:
    path = repo.version("m", 1, skops_bytes("v1"))
    log = EventLog()

    async def scenario() -> None:
        r = repository(settings(repo), Events(log))
        await r.start()
        repo.replace(path, b"garbage")
        await r.reconcile()
        assert answer(r, "m") == "v1-hi"  # the copy in memory keeps serving
        state, reason = index_of(r, "m")["1"]
        assert state == "READY"  # and the index says the new files failed, and why
        assert "failed to load" in reason and "m/1/model.skops" in reason and str(tmp_path) not in reason
        await r.reconcile()  # the same broken files are not loaded again on every look
        assert log.states("m").count(("1", "LOADING")) == 2
        repo.replace(path, skops_bytes("v1"))  # fixed: loaded, and the warning goes
        await r.reconcile()
        await r.settled()
        assert index_of(r, "m") == {"1": ("READY", "")}
        assert log.states("m").count(("1", "LOADING")) == 3
        await r.close()

    run(scenario)


def test_an_explicit_load_retries_broken_files_of_a_served_version(repo: ModelRepo) -> None:
    path = repo.version("m", 1, skops_bytes("v1"))
    log = EventLog()

    async def scenario() -> None:
        r = repository(settings(repo), Events(log))
        await r.start()
        repo.replace(path, b"garbage")
        await r.reconcile()
        await r.load_model("m")  # a version still serves: the load succeeds, and it did try the files again
        assert log.states("m").count(("1", "LOADING")) == 3
        assert answer(r, "m") == "v1-hi"
        await r.close()

    run(scenario)


# reconcile after changes on disk ---------------------------------------------------------------------------
def test_a_new_version_is_loaded_and_becomes_the_default(repo: ModelRepo) -> None:
    repo.version("m", 1, skops_bytes("v1"))
    repo.version("m", 2, skops_bytes("v2"))
    log = EventLog()

    async def scenario() -> None:
        r = repository(settings(repo), Events(log))
        await r.start()
        assert r.resolve("m").version == "2"
        # a version still being written (3.tmp/) is not seen; the rename makes it appear whole
        staging = repo.root / "m" / "3.tmp"
        staging.mkdir()
        (staging / "model.skops").write_bytes(skops_bytes("v3")[:100])
        await r.reconcile()
        assert sorted(index_of(r, "m")) == ["2"]
        (staging / "model.skops").write_bytes(skops_bytes("v3"))
        staging.rename(repo.root / "m" / "3")
        await r.reconcile()
        await r.settled()
        assert index_of(r, "m") == {"3": ("READY", "")}
        assert answer(r, "m") == "v3-hi"
        assert log.states("m")[-4:] == [("3", "LOADING"), ("3", "READY"), ("2", "UNLOADING"), ("2", "UNLOADED")]
        await r.close()

    run(scenario)


def test_a_changed_artefact_is_reloaded_and_the_old_one_drains_first(repo: ModelRepo) -> None:
    from modelapi.dataplane import DataPlane
    from modelapi.inference import InferenceRequest

    path = repo.version("m", 1, skops_bytes("old"))
    log = EventLog()

    async def scenario() -> None:
        r = repository(settings(repo), Events(log))
        plane = DataPlane(r)
        await plane.start()
        with plane.call("m") as held:  # a call in flight on the old version
            repo.replace(path, skops_bytes("new"))
            await r.reconcile()
            assert answer(r, "m") == "new-hi"  # new calls go to the new files at once
            assert held.handle is not r.resolve("m")
            await asyncio.sleep(0.2)
            assert ("1", "UNLOADED") not in log.states("m")  # the old model is not unloaded under the call
            reply = await held.infer(InferenceRequest(rows(1.0)))
            assert label_of(reply.outputs) == "old-hi"  # and the call finishes on the version it holds
        await r.settled()
        assert log.states("m") == [
            ("1", "LOADING"),
            ("1", "READY"),
            ("1", "LOADING"),
            ("1", "READY"),
            ("1", "UNLOADING"),
            ("1", "UNLOADED"),
        ]
        reply = await plane.infer("m", InferenceRequest(rows(1.0)))
        assert label_of(reply.outputs) == "new-hi" and reply.model_version == "1"
        await plane.close()

    run(scenario)


def test_an_old_version_that_never_drains_is_unloaded_after_the_grace_period(repo: ModelRepo) -> None:
    repo.version("m", 1, skops_bytes("v1"))
    log = EventLog()

    async def scenario() -> None:
        r = repository(settings(repo, grace_period_s=0.2), Events(log))
        await r.start()
        r.resolve("m").acquire()  # a call that never ends
        repo.version("m", 2, skops_bytes("v2"))
        await r.reconcile()
        await asyncio.wait_for(r.settled(), 5)
        assert ("1", "UNLOADED") in log.states("m")
        await r.close()

    run(scenario)


def test_removing_the_default_moves_it_only_once_the_next_is_ready(repo: ModelRepo) -> None:
    repo.version("m", 1, skops_bytes("v1"))
    repo.version("m", 2, skops_bytes("v2"))
    during: dict[str, str] = {}

    async def scenario() -> None:
        r = repository(settings(repo))
        await r.start()
        assert sorted(index_of(r, "m")) == ["2"]  # latest 1: version 1 is not loaded

        class Watch(Observer):
            def model_state_changed(self, event: ModelStateChanged) -> None:
                during[f"{event.version} {event.state}"] = r.resolve("m").version

        r.events.subscribe(Watch())
        repo.remove("m", 2)
        await r.reconcile()
        await r.settled()
        assert during["1 LOADING"] == "2" and during["1 READY"] == "2"  # version 2 serves while 1 loads
        assert during["2 UNLOADING"] == "1"  # taken out only once 1 is ready
        assert index_of(r, "m") == {"1": ("READY", "")}
        assert answer(r, "m") == "v1-hi"
        await r.close()

    run(scenario)


def test_removing_the_default_when_the_next_cannot_load_keeps_the_default(repo: ModelRepo) -> None:
    repo.version("m", 1, b"corrupt")
    repo.version("m", 2, skops_bytes("v2"))

    async def scenario() -> None:
        r = repository(settings(repo))
        await r.start()
        repo.remove("m", 2)
        await r.reconcile()
        assert index_of(r, "m")["2"] == ("READY", "") and index_of(r, "m")["1"][0] == "UNAVAILABLE"
        assert answer(r, "m") == "v2-hi"
        await r.close()

    run(scenario)


def test_a_model_removed_from_disk_stops_being_served(repo: ModelRepo) -> None:
    repo.version("m", 1, skops_bytes("v1"))
    repo.version("k", 1, skops_bytes("k"))

    async def scenario() -> None:
        r = repository(settings(repo))
        await r.start()
        repo.remove("m", 1)
        (repo.root / "m").rmdir()
        await r.reconcile()
        await r.settled()
        assert "m" not in r.names()
        with pytest.raises(ModelNotFound):
            r.resolve("m")
        assert answer(r, "k") == "k-hi"
        await r.close()

    run(scenario)


def test_model_toml_edits_take_effect(repo: ModelRepo) -> None:
    for v in (1, 2, 3):
        repo.version("m", v, skops_bytes(f"v{v}"))

    async def scenario() -> None:
        r = repository(settings(repo))
        await r.start()
        assert sorted(index_of(r, "m")) == ["3"]

        repo.toml("m", 'version_policy = "all"\n[labels]\nstable = 1\nbeta = 3\n')
        await r.reconcile()
        assert sorted(index_of(r, "m")) == ["1", "2", "3"]
        assert r.resolve("m").version == "1" and r.resolve("m", label="beta").version == "3"

        repo.toml("m", 'version_policy = "all"\ncanary_percent = 50\n[labels]\nstable = 1\ncanary = 2\n')
        await r.reconcile()
        picked = collections.Counter(r.resolve("m").version for _ in range(400))
        assert set(picked) == {"1", "2"} and 120 <= picked["2"] <= 280
        with pytest.raises(ModelNotFound, match="no label 'beta'"):
            r.resolve("m", label="beta")

        repo.toml("m", "version_policy = [2]\n")
        await r.reconcile()
        await r.settled()
        assert index_of(r, "m") == {"2": ("READY", "")}
        assert {r.resolve("m").version for _ in range(50)} == {"2"}

        (repo.root / "m" / "model.toml").unlink()  # back to the defaults: latest 1
        await r.reconcile()
        await r.settled()
        assert index_of(r, "m") == {"3": ("READY", "")}
        await r.close()

    run(scenario)


def test_a_malformed_model_toml_at_start_makes_the_model_unavailable_naming_file_and_field(
    repo: ModelRepo, tmp_path: Path
) -> None:
    repo.version("m", 1, skops_bytes("v1"))
    repo.version("k", 1, skops_bytes("k"))
    repo.toml("m", "[labels]\nstable = 'three'\n")

    async def scenario() -> None:
        r = repository(settings(repo))
        await r.start()
        ((state, reason),) = index_of(r, "m").values()
        assert state == "UNAVAILABLE"
        assert "m/model.toml" in reason and "labels.stable" in reason and str(tmp_path) not in reason
        with pytest.raises(ModelNotReady, match=r"labels\.stable"):
            r.resolve("m")
        assert answer(r, "k") == "k-hi"  # one bad model.toml never stops the others
        await r.close()

    run(scenario)


@pytest.mark.parametrize(
    ("bad", "field"),
    [
        ("[labels]\nstable = 'three'\n", "labels.stable"),
        ("canary_precent = 10\n", "canary_precent"),
        ("version_policy = { latest = 0 }\n", "version_policy.latest"),
        ("version_policy = [1, \n", "not valid TOML"),
    ],
)
def test_a_typo_in_model_toml_keeps_the_last_good_config_serving(
    repo: ModelRepo, tmp_path: Path, bad: str, field: str
) -> None:
    repo.version("m", 1, skops_bytes("v1"))
    repo.version("m", 2, skops_bytes("v2"))
    repo.toml("m", 'version_policy = "all"\n[labels]\nstable = 1\n')
    log = EventLog()

    async def scenario() -> None:
        r = repository(settings(repo), Events(log))
        await r.start()
        repo.toml("m", bad)
        await r.reconcile()
        await r.settled()
        rows_now = index_of(r, "m")
        assert sorted(rows_now) == ["1", "2"]
        for state, reason in rows_now.values():
            assert state == "READY"
            assert "m/model.toml" in reason and field in reason and "1, 2" in reason
            assert str(tmp_path) not in reason
        assert r.resolve("m").version == "1"  # the last good labels still apply
        assert r.resolve("m", label="stable").version == "1"
        assert not [e for e in log.of(ModelStateChanged) if e.state in ("UNLOADING", "UNLOADED")]
        # fixed: the new config applies and the warning goes
        repo.toml("m", "version_policy = [2]\n")
        await r.reconcile()
        await r.settled()
        assert index_of(r, "m") == {"2": ("READY", "")}
        await r.close()

    run(scenario)


# files still being written -----------------------------------------------------------------------------------
def test_a_file_that_changes_while_it_loads_is_loaded_again(repo: ModelRepo, monkeypatch: pytest.MonkeyPatch) -> None:
    path = repo.version("m", 1, skops_bytes("partial"))
    loads: list[str] = []

    def load_while_the_copy_finishes(*args: Any, **kwargs: Any) -> Any:
        model = real_load_model(*args, **kwargs)
        loads.append(label_of(dict(model.predict(rows(1.0)))))
        if len(loads) == 1:  # the copy was still running: its last bytes land while we load
            repo.overwrite(path, skops_bytes("final"))
        return model

    monkeypatch.setattr("modelapi.repository.sources.load_model", load_while_the_copy_finishes)
    log = EventLog()

    async def scenario() -> None:
        r = repository(settings(repo), Events(log))
        await r.start()
        assert loads == ["partial-hi", "final-hi"]
        assert answer(r, "m") == "final-hi"  # what serves is what the files hold now
        assert index_of(r, "m") == {"1": ("READY", "")}
        await r.reconcile()  # and it counts as up to date: no further load
        assert len(loads) == 2
        await r.close()

    run(scenario)
    assert [s for v, s in log.states("m")][:3] == ["LOADING", "READY", "UNLOADING"]


def test_files_that_keep_changing_are_unavailable_asking_for_write_then_rename(
    repo: ModelRepo, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo.version("m", 1, skops_bytes("v1"))
    writing = {"on": False}
    count = {"loads": 0}

    def always_changing(*args: Any, **kwargs: Any) -> Any:
        model = real_load_model(*args, **kwargs)
        if writing["on"]:
            count["loads"] += 1
            target = repo.root / "m" / "2" / "model.skops"
            repo.overwrite(target, skops_bytes("v2" if count["loads"] % 2 else "other"))
        return model

    monkeypatch.setattr("modelapi.repository.sources.load_model", always_changing)

    async def scenario() -> None:
        r = repository(settings(repo))
        await r.start()
        writing["on"] = True
        repo.version("m", 2, skops_bytes("v2"))
        await r.reconcile()
        state, reason = index_of(r, "m")["2"]
        assert state == "UNAVAILABLE" and "kept changing" in reason and "rename" in reason
        assert count["loads"] == 3  # a bounded number of attempts
        assert answer(r, "m") == "v1-hi"  # what served before keeps serving
        writing["on"] = False
        repo.overwrite(repo.root / "m" / "2" / "model.skops", skops_bytes("v2"))  # the copy is done
        await r.reconcile()
        await r.settled()
        assert index_of(r, "m") == {"2": ("READY", "")} and answer(r, "m") == "v2-hi"
        await r.close()

    run(scenario)


# load and unload on demand ---------------------------------------------------------------------------------
def test_unload_and_load_a_model(repo: ModelRepo) -> None:
    repo.version("m", 1, skops_bytes("v1"))
    repo.version("k", 1, skops_bytes("k"))
    log = EventLog()

    async def scenario() -> None:
        r = repository(settings(repo), Events(log))
        await r.start()
        await r.unload_model("m")
        await r.settled()
        assert index_of(r, "m") == {"": ("UNAVAILABLE", "unloaded")}
        with pytest.raises(ModelNotReady, match="unloaded"):
            r.resolve("m")
        assert log.states("m")[-2:] == [("1", "UNLOADING"), ("1", "UNLOADED")]
        await r.reconcile()  # a later look at the disk does not bring it back
        assert index_of(r, "m") == {"": ("UNAVAILABLE", "unloaded")}
        assert answer(r, "k") == "k-hi"
        await r.load_model("m")
        assert index_of(r, "m") == {"1": ("READY", "")} and answer(r, "m") == "v1-hi"
        with pytest.raises(ModelNotFound, match="no model named 'nope'"):
            await r.load_model("nope")
        with pytest.raises(ModelNotFound, match="no model named 'nope'"):
            await r.unload_model("nope")
        await r.close()

    run(scenario)


def test_load_picks_up_new_files_and_retries_failed_versions(repo: ModelRepo) -> None:
    repo.version("m", 1, skops_bytes("v1"))
    repo.version("k", 1, b"corrupt")

    async def scenario() -> None:
        r = repository(settings(repo))
        await r.start()
        with pytest.raises(BadRequest) as info:
            await r.load_model("k")
        assert "failed to load 'k'" in info.value.detail and "k/1/model.skops" in info.value.detail
        repo.replace(repo.root / "k" / "1" / "model.skops", skops_bytes("k"))
        await r.load_model("k")
        assert answer(r, "k") == "k-hi"
        await r.close()

    run(scenario)


def test_load_of_a_model_that_appeared_on_disk(repo: ModelRepo) -> None:
    repo.version("m", 1, skops_bytes("v1"))

    async def scenario() -> None:
        r = repository(settings(repo))
        await r.start()
        repo.version("late", 1, skops_bytes("late"))
        await r.load_model("late")
        assert answer(r, "late") == "late-hi"
        await r.close()

    run(scenario)


def test_workers_sharing_state_follow_each_others_unload_and_load(repo: ModelRepo, tmp_path: Path) -> None:
    repo.version("m", 1, skops_bytes("v1"))
    repo.version("k", 1, skops_bytes("k"))
    state_file = tmp_path / "state" / "models.json"

    async def until(check: Callable[[], bool], seconds: float = 2.0) -> float:
        loop = asyncio.get_running_loop()
        start = loop.time()
        while not check():
            assert loop.time() - start < seconds, "the other worker did not follow in time"
            await asyncio.sleep(0.02)
        return loop.time() - start

    def unloaded(r: Repository) -> bool:
        return index_of(r, "m") == {"": ("UNAVAILABLE", "unloaded")}

    async def scenario() -> None:
        a = repository(settings(repo), shared=SharedState(state_file))
        b = repository(settings(repo), shared=SharedState(state_file))
        await a.start()
        await b.start()
        followers = [asyncio.ensure_future(a.follow()), asyncio.ensure_future(b.follow())]
        try:
            await a.unload_model("m")
            assert unloaded(a)
            await until(lambda: unloaded(b))
            with pytest.raises(ModelNotReady):
                b.resolve("m")
            assert answer(b, "k") == "k-hi"
            await b.load_model("m")
            await until(lambda: index_of(a, "m") == {"1": ("READY", "")})
            assert answer(a, "m") == "v1-hi"
        finally:
            for task in followers:
                task.cancel()
            await asyncio.gather(*followers, return_exceptions=True)
        await a.close()
        await b.close()

    run(scenario)


# state events ----------------------------------------------------------------------------------------------
def test_state_events_for_load_failure_and_retire(repo: ModelRepo) -> None:
    repo.version("m", 1, skops_bytes("v1"))
    repo.version("bad", 1, warmup_fails_skops_bytes())
    log = EventLog()

    async def scenario() -> None:
        r = repository(settings(repo), Events(log))
        await r.start()
        await r.close()

    run(scenario)
    changes = [(e.model, e.version, e.state, e.previous) for e in log.of(ModelStateChanged)]
    assert [c for c in changes if c[0] == "m"] == [
        ("m", "1", "LOADING", None),
        ("m", "1", "READY", "LOADING"),
        ("m", "1", "UNLOADING", "READY"),
        ("m", "1", "UNLOADED", "UNLOADING"),
    ]
    bad = [e for e in log.of(ModelStateChanged) if e.model == "bad"]
    assert [(e.state, e.previous) for e in bad] == [("LOADING", None), ("UNAVAILABLE", "LOADING")]
    assert bad[1].reason is not None and "ValueError" in bad[1].reason
    assert all(e.reason is None for e in log.of(ModelStateChanged) if e.state != "UNAVAILABLE")


# found in review ------------------------------------------------------------------------------------------
def test_loads_and_unloads_asked_of_two_workers_at_once_are_all_followed(repo: ModelRepo, tmp_path: Path) -> None:
    """Each worker applies every change of the shared state, even when its own load or unload (or a read of
    the file for another reason) comes between its polls."""
    for name in ("x", "y"):
        repo.version(name, 1, skops_bytes(name))
    state_file = tmp_path / "state" / "models.json"

    async def scenario() -> None:
        a = repository(settings(repo), shared=SharedState(state_file))
        b = repository(settings(repo), shared=SharedState(state_file))
        await a.start()
        await b.start()
        followers = [asyncio.ensure_future(a.follow()), asyncio.ensure_future(b.follow())]
        try:
            await asyncio.gather(a.unload_model("x"), b.unload_model("y"))
            await b.reconcile({"y"})  # a read of the shared file that is not the poll's
            loop = asyncio.get_running_loop()
            start = loop.time()
            while not all(index_of(r, n) == {"": ("UNAVAILABLE", "unloaded")} for r in (a, b) for n in "xy"):
                assert loop.time() - start < 2.0, (index_of(a, "x"), index_of(b, "x"))
                await asyncio.sleep(0.02)
            await asyncio.gather(a.load_model("y"), b.load_model("x"))
            start = loop.time()
            while not all(index_of(r, n) == {"1": ("READY", "")} for r in (a, b) for n in "xy"):
                assert loop.time() - start < 2.0
                await asyncio.sleep(0.02)
        finally:
            for task in followers:
                task.cancel()
            await asyncio.gather(*followers, return_exceptions=True)
        await a.close()
        await b.close()

    run(scenario)


def test_a_stable_label_on_no_served_version_sends_nothing_to_the_canary_by_default(repo: ModelRepo) -> None:
    for v in (1, 2, 3):
        repo.version("m", v, skops_bytes(f"v{v}"))
    repo.toml("m", 'version_policy = "all"\ncanary_percent = 0\n[labels]\nstable = 7\ncanary = 3\n')

    async def scenario() -> None:
        r = repository(settings(repo))
        await r.start()
        assert {r.resolve("m").version for _ in range(50)} == {"2"}  # the highest that is not the canary
        reasons = {reason for _, reason in index_of(r, "m").values()}
        assert any("stable = 7" in why and "name no version served" in why for why in reasons), reasons
        await r.close()

    run(scenario)


def test_a_repository_that_cannot_be_read_keeps_its_models_serving(repo: ModelRepo, tmp_path: Path) -> None:
    repo.version("m", 1, skops_bytes("v1"))

    async def scenario() -> None:
        r = repository(settings(repo))
        await r.start()
        away = repo.root.with_name("away")
        repo.root.rename(away)
        try:
            await r.reconcile()
            assert answer(r, "m") == "v1-hi"  # nothing is taken down because the directory is gone a moment
            with pytest.raises(ModelNotReady) as refused:
                await r.load_model("m")
            assert "cannot be read now" in str(refused.value) and str(tmp_path) not in str(refused.value)
        finally:
            away.rename(repo.root)
        await r.reconcile()
        assert answer(r, "m") == "v1-hi"
        await r.close()

    run(scenario)


def test_close_while_a_version_loads_unloads_it_too(repo: ModelRepo, monkeypatch: pytest.MonkeyPatch) -> None:
    """Shutdown during a reload: close() waits for the load in progress, then unloads what it loaded."""
    import threading

    repo.version("m", 1, skops_bytes("v1"))
    stopped: list[str] = []
    release = threading.Event()

    async def scenario() -> None:
        r = repository(settings(repo, watch=False))
        await r.start()
        real_start = r._start  # slowed down: shut down in the middle of a load

        def slow_start(spec: Any) -> Any:
            handle = real_start(spec)
            release.wait(5)
            original = handle.stop
            handle.stop = lambda: (stopped.append(handle.version), original())[1]  # type: ignore[method-assign]
            return handle

        monkeypatch.setattr(r, "_start", slow_start)
        repo.version("m", 2, skops_bytes("v2"))
        follower = asyncio.ensure_future(r._files_changed({"m"}))  # what --watch calls
        await asyncio.sleep(0.2)
        follower.cancel()  # the lifespan cancels the follower first
        closing = asyncio.ensure_future(r.close())
        await asyncio.sleep(0.1)
        assert not closing.done()  # it waits for the load in progress
        release.set()
        await closing
        assert stopped == ["2"]  # the version loaded during shutdown was unloaded

    run(scenario)
