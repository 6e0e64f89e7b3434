from __future__ import annotations

import asyncio
import logging
import os
import time
from pathlib import Path

import pytest

from modelapi.repository.watch import changed_models, watch_repository


@pytest.fixture
def root(tmp_path: Path) -> Path:
    root = tmp_path / "models"
    (root / "iris" / "1").mkdir(parents=True)
    (root / "iris" / "1" / "model.skops").write_bytes(b"x")
    (root / "churn.skops").write_bytes(b"x")
    (root / "churn.examples.json").write_text("[]")
    return root


def test_paths_inside_a_model_directory_name_it(root: Path) -> None:
    assert changed_models(root, [root / "iris" / "1" / "model.skops"]) == {"iris"}
    assert changed_models(root, [root / "iris" / "model.toml"]) == {"iris"}
    assert changed_models(root, [root / "iris"]) == {"iris"}
    assert changed_models(root, [str(root / "iris" / "7")]) == {"iris"}  # a version that is gone; str paths too
    assert changed_models(root, [root / "iris" / "1", root / "wine" / "MLmodel"]) == {"iris", "wine"}


def test_loose_files_name_their_stem(root: Path) -> None:
    assert changed_models(root, [root / "churn.skops"]) == {"churn"}
    assert changed_models(root, [root / "churn.examples.json"]) == {"churn"}  # a sidecar names its model
    # gone: a file churn.skops or a directory named churn.skops; both are named, the registry sorts it out
    assert changed_models(root, [root / "gone.skops"]) == {"gone", "gone.skops"}
    assert changed_models(root, [root / "gone"]) == {"gone"}


def test_temp_and_hidden_paths_name_nothing(root: Path) -> None:
    ignored = [
        root / "iris" / "3.tmp",
        root / "iris" / "3.tmp" / "model.skops",
        root / "iris" / "3" / "model.skops.part",
        root / "iris" / "3" / "model.skops~",
        root / "iris" / ".DS_Store",
        root / ".staging" / "iris" / "3" / "model.skops",
        root / "churn.skops.partial",
        root / "iris.tmp" / "1" / "model.skops",
        root / ".hidden.skops",
    ]
    for path in ignored:
        assert changed_models(root, [path]) == set(), path
    # the rename of 3.tmp/ into place shows up as its target, which is no temp path
    assert changed_models(root, [root / "iris" / "3.tmp", root / "iris" / "3"]) == {"iris"}


def test_paths_outside_the_root_name_nothing(root: Path, tmp_path: Path) -> None:
    assert changed_models(root, [tmp_path / "elsewhere" / "iris" / "1"]) == set()
    assert changed_models(root, [root]) == set()
    assert changed_models(root, []) == set()


def test_a_root_reached_through_a_symlink(root: Path, tmp_path: Path) -> None:
    link = tmp_path / "link"
    link.symlink_to(root)
    assert changed_models(link, [root / "iris" / "1"]) == {"iris"}
    assert changed_models(root, [link / "iris" / "1"]) == {"iris"}


@pytest.mark.parametrize("force_polling", [False, True], ids=["events", "polling"])
def test_watch_reports_a_version_at_its_rename(
    root: Path, force_polling: bool, caplog: pytest.LogCaptureFixture
) -> None:
    calls: list[set[str]] = []

    async def main() -> None:
        stop = asyncio.Event()
        arrived = asyncio.Event()

        async def on_change(names: set[str]) -> None:
            calls.append(names)
            arrived.set()
            if "probe" in names:
                raise RuntimeError("probe handler fails")  # the watch goes on

        task = asyncio.create_task(
            watch_repository(root, on_change, debounce_ms=100, stop_event=stop, force_polling=force_polling)
        )

        async def next_call(timeout: float = 5.0) -> set[str]:
            await asyncio.wait_for(arrived.wait(), timeout)
            arrived.clear()
            return calls[-1]

        async def quiet(seconds: float) -> None:
            """Wait until nothing has been reported for ``seconds``, then forget what was."""
            while True:
                count = len(calls)
                await asyncio.sleep(seconds)
                if len(calls) == count:
                    calls.clear()
                    arrived.clear()
                    return

        # the watcher starts in the background: touch a probe model until it is heard
        deadline = time.monotonic() + 10
        probe = root / "probe"
        probe.mkdir()
        while not calls:
            assert time.monotonic() < deadline, "the watcher never reported anything"
            (probe / "x").write_bytes(os.urandom(8))
            await asyncio.sleep(0.2)
        await quiet(0.6)

        # write-then-rename: the writes into 2.tmp/ report nothing, the rename reports iris
        staging = root / "iris" / "2.tmp"
        staging.mkdir()
        (staging / "model.skops").write_bytes(b"half")
        (staging / "model.skops").write_bytes(b"whole")
        await asyncio.sleep(0.8)
        assert calls == []
        os.rename(staging, root / "iris" / "2")
        assert await next_call() == {"iris"}
        await quiet(0.6)

        (root / "iris" / "model.toml").write_text("[versions]\n")
        assert await next_call() == {"iris"}
        await quiet(0.6)

        (root / "churn.skops").write_bytes(b"y")
        assert await next_call() == {"churn"}

        stop.set()
        await asyncio.wait_for(task, timeout=5)

    with caplog.at_level(logging.ERROR, logger="modelapi"):
        asyncio.run(main())
    assert "probe handler fails" in caplog.text
