"""Both stores behind one interface: Parquet in the state directory, and the real PostgreSQL (a fresh schema per
test, as tests/helpers/services.py makes them); SQLite through the SQL store too."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from helpers.services import postgres_schema
from modelapi.events import PredictionsServed
from modelapi.monitor.parquet import ParquetStore
from modelapi.monitor.records import DAY_S, Pending
from modelapi.monitor.sql import SqlStore
from modelapi.monitor.store import LogStore, Tally

T0 = 1_790_000_000.0  # a fixed Unix time; days are counted from it


def rows(model: str, version: str, t: float, n: int, *, start: float = 0.0) -> pa.Table:
    pending = Pending(model, version, int(t // DAY_S))
    inputs = {
        "x": np.arange(n, dtype=float) + start,
        "ssn": np.array(["123-45-6789"] * n, dtype=object),
        "pair": np.ones((n, 2)),
    }
    event = PredictionsServed(
        model, version, "records", "r1", "ci-key", t, 0.002, inputs, {"label": np.array(["a"] * n)}
    )
    assert pending.add(event, sensitive={"ssn"}) == n
    return pending.table()


@contextlib.contextmanager
def opened(kind: str, tmp_path: Path) -> Iterator[LogStore]:
    if kind == "parquet":
        yield ParquetStore(tmp_path / "predictions")
    elif kind == "sqlite":
        store = SqlStore(f"sqlite:///{tmp_path / 'log.db'}")
        yield store
        store.close()
    else:
        with postgres_schema() as url:
            store = SqlStore(url)
            yield store
            store.close()


@pytest.mark.parametrize("kind", ["parquet", "sqlite", "postgres"])
def test_a_store_keeps_rows_tallies_and_the_reference(kind: str, tmp_path: Path) -> None:
    with opened(kind, tmp_path) as store:
        store.write("m", "1", int(T0 // DAY_S), rows("m", "1", T0, 3))
        store.write("m", "2", int((T0 + DAY_S) // DAY_S), rows("m", "2", T0 + DAY_S, 2, start=10))
        store.write("other", "1", int(T0 // DAY_S), rows("other", "1", T0, 1))
        store.write_tallies(
            [Tally("m", "1", int(T0 // 60), os.getpid(), 5, 1), Tally("m", "2", int(T0 // 60) + 1, 7, 2, 0)]
        )
        assert sorted(store.models()) == ["m", "other"]

        table = store.read("m")
        assert table.num_rows == 5
        assert table["version"].to_pylist() == ["1", "1", "1", "2", "2"]
        assert table["input.x"].to_pylist() == [0.0, 1.0, 2.0, 10.0, 11.0]
        assert table["input.pair[1]"].to_pylist() == [1.0] * 5  # a [-1, 2] input as two columns
        assert table["output.label"].to_pylist() == ["a"] * 5
        assert table["key"].to_pylist() == ["ci-key"] * 5  # the key's name; the key itself never reaches the log
        assert table["pid"].to_pylist() == [os.getpid()] * 5
        assert not any("ssn" in name for name in table.column_names)  # marked sensitive: left out
        assert store.read("m", since=T0 + 1).num_rows == 2
        assert store.first("m", 2)["input.x"].to_pylist() == [0.0, 1.0]

        tallies = store.tallies("m")
        assert sorted(tallies["requests"].to_pylist()) == [2, 5]
        assert store.tallies("m", since=T0 + 60)["requests"].to_pylist() == [2]

        assert store.load_reference("m") is None
        store.save_reference("m", {"source": "s", "features": {}})
        store.save_reference("m", {"source": "t", "features": {}})
        assert store.load_reference("m") == {"source": "t", "features": {}}

        store.prune("m", older_than=T0 + DAY_S, max_bytes=1 << 30)  # by age: the first day goes
        assert store.read("m")["version"].to_pylist() == ["2", "2"]
        assert store.read("other").num_rows == 1  # another model's log is its own
        store.prune("m", older_than=0, max_bytes=1)  # by size: the oldest go first, until it fits
        assert store.read("m").num_rows < 2


@pytest.mark.parametrize("kind", ["parquet", "sqlite", "postgres"])
def test_an_input_some_rows_lack_is_read_with_nulls_for_them(kind: str, tmp_path: Path) -> None:
    """Rows logged while an input was marked sensitive lack it, and the rows logged after it was unmarked hold it:
    the log reads it back for those, null for the others, even when the first row read lacks it (the SQL store
    took the first row's columns alone: the input vanished from every row)."""
    lacking = Pending("m", "1", int(T0 // DAY_S))
    holding = Pending("m", "1", int(T0 // DAY_S))
    inputs = {"x": np.array([1.0]), "ssn": np.array(["123-45-6789"], dtype=object)}
    lacking.add(PredictionsServed("m", "1", "records", None, None, T0, 0.001, inputs, {}), sensitive={"ssn"})
    holding.add(PredictionsServed("m", "1", "records", None, None, T0 + 1, 0.001, inputs, {}), sensitive=())
    with opened(kind, tmp_path) as store:
        store.write("m", "1", lacking.day, lacking.table())
        store.write("m", "1", holding.day, holding.table())
        for table in (store.read("m"), store.first("m", 2)):
            assert table["input.x"].to_pylist() == [1.0, 1.0]
            assert table["input.ssn"].to_pylist() == [None, "123-45-6789"]


def test_parquet_files_carry_the_worker_pid_and_are_a_hive_dataset(tmp_path: Path) -> None:
    store = ParquetStore(tmp_path)
    store.write("m", "1", int(T0 // DAY_S), rows("m", "1", T0, 2))
    files = list((tmp_path / "rows").rglob("*.parquet"))
    assert len(files) == 1
    assert files[0].relative_to(tmp_path / "rows").parts[:3] == ("model=m", "version=1", "day=2026-09-21")
    assert files[0].name.startswith(f"part-{os.getpid()}-")
    import pyarrow.dataset as ds

    table = ds.dataset(tmp_path / "rows", partitioning="hive").to_table()
    assert table.num_rows == 2 and set(table["model"].to_pylist()) == {"m"}


def test_a_worker_folds_its_small_files_together(tmp_path: Path) -> None:
    from modelapi.monitor.parquet import COMPACT_AT

    store = ParquetStore(tmp_path)
    for i in range(COMPACT_AT):
        store.write("m", "1", int(T0 // DAY_S), rows("m", "1", T0 + i, 1, start=i))
    files = list((tmp_path / "rows").rglob("*.parquet"))
    assert len(files) == 1
    assert store.read("m")["input.x"].to_pylist() == [float(i) for i in range(COMPACT_AT)]


def test_workers_creating_the_tables_at_once_both_succeed() -> None:
    """Two workers' first writes reach an empty PostgreSQL schema together: neither loses its rows."""
    from concurrent.futures import ThreadPoolExecutor

    with postgres_schema() as url:
        stores = [SqlStore(url) for _ in range(4)]
        try:
            with ThreadPoolExecutor(4) as pool:
                list(pool.map(lambda s: s.write("m", "1", int(T0 // DAY_S), rows("m", "1", T0, 1)), stores))
            assert stores[0].read("m").num_rows == 4
        finally:
            for store in stores:
                store.close()


def test_calls_of_different_shapes_make_one_table_in_call_order() -> None:
    """Runs of calls with the same arrays are joined before Arrow sees them; a call of another shape (an integer
    column where others sent floats, an output the others lack) still lands in order, cast or null-filled."""
    pending = Pending("m", "1", int(T0 // DAY_S))

    def call(x: np.ndarray, outputs: dict[str, np.ndarray]) -> None:
        event = PredictionsServed("m", "1", "records", "r", None, T0, 0.001, {"x": x}, outputs)
        assert pending.add(event, sensitive=()) == len(x)

    call(np.array([1.5, 2.5]), {"y": np.array([10.0, 20.0])})
    call(np.array([3.5]), {"y": np.array([30.0])})
    call(np.array([4], dtype=np.int64), {"y": np.array([40.0]), "extra": np.array(["e"], dtype=object)})
    call(np.array([5.5]), {"y": np.array([50.0])})
    table = pending.table()
    assert table.num_rows == 5
    assert table.column("input.x").to_pylist() == [1.5, 2.5, 3.5, 4.0, 5.5]
    assert table.column("output.y").to_pylist() == [10.0, 20.0, 30.0, 40.0, 50.0]
    assert table.column("output.extra").to_pylist() == [None, None, None, "e", None]
