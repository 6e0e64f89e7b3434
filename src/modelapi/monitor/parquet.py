"""ParquetStore: the prediction log as a Hive-partitioned Parquet dataset in the state directory.

::

    STATE_DIR/predictions/rows/model=iris/version=1/day=2026-12-04/part-<pid>-<ms>-<n>.parquet
    STATE_DIR/predictions/requests/model=iris/day=2026-12-04/part-<pid>-<ms>-<n>.parquet
    STATE_DIR/predictions/references/iris.json

Each worker writes its own files (the pid in the name), so ``--workers N`` write one dataset without locks;
files are written under a dot-name and renamed into place, so a reader never sees half a file. A worker folds
its own small files of a partition into one once it has written ``COMPACT_AT`` there. pyarrow.dataset, pandas,
DuckDB or Spark read the directory as it is.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import os
import time
from datetime import date
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from .records import DAY_S
from .store import TALLY_SCHEMA, Tally, sort_by_time

log = logging.getLogger("modelapi.monitor")
COMPACT_AT = 24
_seq = itertools.count()


def day_name(day: int) -> str:
    return date.fromordinal(date(1970, 1, 1).toordinal() + day).isoformat()


def _day_of(name: str) -> int:
    return (date.fromisoformat(name.partition("=")[2]) - date(1970, 1, 1)).days


def _part(directory: Path) -> Path:
    return directory / f"part-{os.getpid()}-{int(time.time() * 1000)}-{next(_seq)}.parquet"


def _write(table: pa.Table, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name("." + path.name)
    pq.write_table(table, tmp, compression="zstd")
    os.replace(tmp, path)


def _files(directory: Path) -> list[Path]:
    try:
        return sorted(p for p in directory.iterdir() if p.suffix == ".parquet" and not p.name.startswith("."))
    except FileNotFoundError:
        return []


def _dirs(directory: Path, key: str) -> list[Path]:
    try:
        return sorted(p for p in directory.iterdir() if p.is_dir() and p.name.startswith(key + "="))
    except FileNotFoundError:
        return []


def _read(paths: list[Path]) -> list[pa.Table]:
    tables = []
    for path in paths:
        try:
            tables.append(pq.read_table(path))
        except FileNotFoundError:  # pruned or compacted by another worker since it was listed
            continue
        except Exception as exc:
            log.warning("prediction log: %s cannot be read (%s); left out", path.name, exc)
    return tables


def concat(tables: list[pa.Table]) -> pa.Table:
    tables = [t for t in tables if t.num_rows]
    if not tables:
        return pa.table({"time": pa.array([], pa.timestamp("us", tz="UTC")), "version": pa.array([], pa.string())})
    return pa.concat_tables(tables, promote_options="permissive")


class ParquetStore:
    def __init__(self, root: Path) -> None:
        self.root = root

    def _model_dir(self, kind: str, model: str) -> Path:
        return self.root / kind / f"model={quote(model, safe='')}"

    # writing ------------------------------------------------------------------------------------------------
    def write(self, model: str, version: str, day: int, rows: pa.Table) -> None:
        directory = self._model_dir("rows", model) / f"version={quote(version, safe='')}" / f"day={day_name(day)}"
        _write(rows, _part(directory))
        self._compact(directory)

    def _compact(self, directory: Path) -> None:
        mine = [p for p in _files(directory) if p.name.startswith(f"part-{os.getpid()}-")]
        if len(mine) < COMPACT_AT:
            return
        tables = _read(mine)
        _write(concat(tables), _part(directory))
        for path in mine:
            path.unlink(missing_ok=True)

    def write_tallies(self, tallies: list[Tally]) -> None:
        groups: dict[tuple[str, int], list[Tally]] = {}
        for t in tallies:
            groups.setdefault((t.model, t.minute * 60 // DAY_S), []).append(t)
        for (model, day), group in groups.items():
            rows = [
                {"version": t.version, "minute": t.minute, "pid": t.pid, "requests": t.requests, "rejected": t.rejected}
                for t in group
            ]
            table = pa.Table.from_pylist(rows, schema=TALLY_SCHEMA)
            directory = self._model_dir("requests", model) / f"day={day_name(day)}"
            _write(table, _part(directory))
            self._compact(directory)

    # reading ------------------------------------------------------------------------------------------------
    def _version_days(self, model: str) -> list[tuple[str, Path]]:
        out = []
        for vdir in _dirs(self._model_dir("rows", model), "version"):
            version = unquote(vdir.name.partition("=")[2])
            out += [(version, d) for d in _dirs(vdir, "day")]
        return out

    def read(self, model: str, since: float | None = None) -> pa.Table:
        first_day = None if since is None else int(since // DAY_S)
        tables = []
        for version, ddir in self._version_days(model):
            if first_day is not None and _day_of(ddir.name) < first_day:
                continue
            for table in _read(_files(ddir)):
                tables.append(table.append_column("version", pa.array([version] * table.num_rows, pa.string())))
        table = sort_by_time(concat(tables))
        if since is not None and table.num_rows:
            cutoff = pa.scalar(int(since * 1_000_000), pa.int64()).cast(pa.timestamp("us", tz="UTC"))
            table = table.filter(pc.greater_equal(table["time"], cutoff))
        return table

    def first(self, model: str, n: int) -> pa.Table:
        by_day: dict[int, list[tuple[str, Path]]] = {}
        for version, ddir in self._version_days(model):
            by_day.setdefault(_day_of(ddir.name), []).append((version, ddir))
        tables: list[pa.Table] = []
        rows = 0
        for day in sorted(by_day):
            for version, ddir in by_day[day]:
                for table in _read(_files(ddir)):
                    tables.append(table.append_column("version", pa.array([version] * table.num_rows, pa.string())))
                    rows += table.num_rows
            if rows >= n:
                break
        return sort_by_time(concat(tables)).slice(0, n)

    def tallies(self, model: str, since: float | None = None) -> pa.Table:
        first_day = None if since is None else int(since // DAY_S)
        tables = []
        for ddir in _dirs(self._model_dir("requests", model), "day"):
            if first_day is None or _day_of(ddir.name) >= first_day:
                tables += _read(_files(ddir))
        if not tables:
            return TALLY_SCHEMA.empty_table()
        table = pa.concat_tables(tables)
        if since is not None:
            table = table.filter(pc.greater_equal(table["minute"], int(since // 60)))
        return table

    def models(self) -> list[str]:
        return [unquote(d.name.partition("=")[2]) for d in _dirs(self.root / "rows", "model")]

    # references ---------------------------------------------------------------------------------------------
    def _reference_path(self, model: str) -> Path:
        return self.root / "references" / f"{quote(model, safe='')}.json"

    def load_reference(self, model: str) -> dict[str, Any] | None:
        try:
            data: dict[str, Any] = json.loads(self._reference_path(model).read_text())
            return data
        except (FileNotFoundError, ValueError):
            return None

    def save_reference(self, model: str, summary: dict[str, Any]) -> None:
        path = self._reference_path(model)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}")
        tmp.write_text(json.dumps(summary))
        os.replace(tmp, path)

    # retention ----------------------------------------------------------------------------------------------
    def prune(self, model: str, older_than: float, max_bytes: int) -> None:
        cutoff = int(older_than // DAY_S)
        days: list[tuple[int, Path]] = [(_day_of(d.name), d) for _, d in self._version_days(model)]
        days += [(_day_of(d.name), d) for d in _dirs(self._model_dir("requests", model), "day")]
        for day, ddir in days:
            if day < cutoff:
                for path in _files(ddir):
                    path.unlink(missing_ok=True)
                _rmdir(ddir)
        files = []
        for day, ddir in sorted(days, key=lambda d: d[0]):
            if day >= cutoff and "rows" in ddir.parts:
                for path in _files(ddir):
                    try:
                        files.append((day, path.stat().st_mtime, path, path.stat().st_size))
                    except FileNotFoundError:
                        continue
        total = sum(f[3] for f in files)
        for _, _, path, size in sorted(files):
            if total <= max_bytes:
                break
            path.unlink(missing_ok=True)
            total -= size

    def close(self) -> None:
        pass


def _rmdir(directory: Path) -> None:
    with contextlib.suppress(OSError):  # another worker's file arrived, or it is gone already
        directory.rmdir()
