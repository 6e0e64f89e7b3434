from __future__ import annotations

import asyncio
import logging
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from modelapi.repository.shared import SharedState, Snapshot, poll


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "state" / "models.json"  # the directory does not exist yet


def test_missing_file_is_the_empty_state(path: Path) -> None:
    state = SharedState(path)
    assert state.read() == Snapshot(0, frozenset(), {})
    assert state.changed() is None
    assert not path.exists()


def test_two_objects_see_each_others_changes(path: Path) -> None:
    a, b = SharedState(path), SharedState(path)  # two workers
    assert a.read().generation == b.read().generation == 0

    after = a.unload("iris")
    assert after == Snapshot(1, frozenset({"iris"}), {})
    assert a.changed() is None  # its own change counts as seen
    seen = b.changed()
    assert seen == after
    assert b.changed() is None  # nothing changed since

    b.load("iris")
    got = a.changed()
    assert got is not None
    assert got.generation == 2 and got.unloaded == frozenset() and dict(got.reloads) == {"iris": 1}
    assert a.changed() is None

    a.load("iris")  # an explicit load of a served model still asks for a reload
    got = b.changed()
    assert got is not None and got.reloads["iris"] == 2 and got.generation == 3
    assert b.read() == a.read()


def test_changed_rereads_only_when_the_file_changed(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    a, b = SharedState(path), SharedState(path)
    a.unload("iris")
    assert b.changed() is not None
    loads = 0
    original = SharedState._load

    def counting(self: SharedState) -> Snapshot:
        nonlocal loads
        loads += self is b
        return original(self)

    monkeypatch.setattr(SharedState, "_load", counting)
    for _ in range(5):
        assert b.changed() is None
    assert loads == 0  # a stat, no read
    a.unload("churn")
    assert b.changed() is not None
    assert loads == 1


def test_file_and_lock_are_private(path: Path) -> None:
    state = SharedState(path)
    state.unload("iris")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(state.lock_path.stat().st_mode) == 0o600
    assert state.lock_path == path.with_name("models.json.lock")
    assert sorted(p.name for p in path.parent.iterdir()) == ["models.json", "models.json.lock"]  # no temp left


def test_corrupt_file_keeps_the_last_good_state(path: Path, caplog: pytest.LogCaptureFixture) -> None:
    writer, reader = SharedState(path), SharedState(path)
    good = writer.unload("iris")
    assert reader.read() == good
    path.write_bytes(b'{"generation": 9, "unl')  # torn by hand; our own writes never leave this
    with caplog.at_level(logging.WARNING, logger="modelapi"):
        assert reader.read() == good
        assert reader.changed() is None
    assert "corrupt" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="modelapi"):
        assert reader.changed() is None
    assert caplog.text == ""  # warned once per corrupt file, not on every poll
    assert SharedState(path).read() == Snapshot(0)  # a fresh reader has no good state: empty

    path.write_bytes(b'{"generation": "x", "unloaded": [], "reloads": {}}')  # well-formed JSON, wrong shape
    assert reader.read() == good
    fixed = writer.load("churn")  # a write starts from the last good state
    assert fixed.generation == 2 and fixed.unloaded == frozenset({"iris"})
    assert reader.changed() == fixed


def test_reset_starts_from_the_files(path: Path) -> None:
    a, b = SharedState(path), SharedState(path)
    a.unload("iris")
    a.load("churn")
    before = b.read()
    assert before.unloaded == {"iris"}
    a.reset()
    after = b.changed()
    assert after is not None
    assert after.unloaded == frozenset() and dict(after.reloads) == {}
    assert after.generation > before.generation  # never reused: a reader holding an old snapshot sees a change
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_reset_creates_the_directory(path: Path) -> None:
    SharedState(path).reset()
    assert SharedState(path).read().unloaded == frozenset()
    assert path.is_file()


_WORKER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from modelapi.repository.shared import SharedState

    path, worker, start = Path(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
    state = SharedState(path)
    time.sleep(max(0.0, start - time.time()))  # all start together, to contend for the lock
    for i in range(25):
        name = f"w{worker}-m{i}"
        if i % 2:
            state.load(name)
        else:
            state.unload(name)
    """
)


def test_concurrent_writers_lose_no_update(path: Path) -> None:
    start = time.time() + 1.5
    procs = [
        subprocess.Popen([sys.executable, "-c", _WORKER, str(path), str(w), str(start)], stderr=subprocess.PIPE)
        for w in range(4)
    ]
    for p in procs:
        _, err = p.communicate(timeout=60)
        assert p.returncode == 0, err.decode()
    final = SharedState(path).read()
    assert final.generation == 100
    assert final.unloaded == {f"w{w}-m{i}" for w in range(4) for i in range(0, 25, 2)}
    assert dict(final.reloads) == {f"w{w}-m{i}": 1 for w in range(4) for i in range(1, 25, 2)}


def test_poll_reports_another_objects_change(path: Path, caplog: pytest.LogCaptureFixture) -> None:
    seen: list[Snapshot] = []

    async def main() -> None:
        arrived = asyncio.Event()

        async def on_change(snap: Snapshot) -> None:
            seen.append(snap)
            arrived.set()
            if len(seen) == 1:
                raise RuntimeError("applying failed")

        task = asyncio.create_task(poll(SharedState(path), on_change))  # the default 0.5 s interval
        other = SharedState(path)
        await asyncio.sleep(0.1)
        for name in ("iris", "churn"):
            arrived.clear()
            began = time.monotonic()
            await asyncio.to_thread(other.unload, name)
            await asyncio.wait_for(arrived.wait(), timeout=2.0)
            assert time.monotonic() - began < 1.5  # 0.5 s polls; every worker agrees well within 2 s
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    with caplog.at_level(logging.ERROR, logger="modelapi"):
        asyncio.run(main())
    assert [s.unloaded for s in seen] == [{"iris"}, {"iris", "churn"}]  # polling went on after the failure
    assert "applying the shared model state" in caplog.text and "applying failed" in caplog.text
