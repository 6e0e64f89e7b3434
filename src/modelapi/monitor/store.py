"""Where the prediction log lives: Parquet files in the state directory, or the ``--database-url`` database.

Both stores hold three things per model: the logged rows (``records.py``), per-minute request tallies of every
worker (answered and rejected requests, for the rejected rate) and the reference summary (JSON). Every
reader gets rows as one Arrow table sorted by time, with a ``version`` column added, whichever store wrote them.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Protocol

import pyarrow as pa

from ..settings import Settings

TALLY_SCHEMA = pa.schema(
    [
        ("version", pa.string()),
        ("minute", pa.int64()),
        ("pid", pa.int32()),
        ("requests", pa.int64()),
        ("rejected", pa.int64()),
    ]
)


@dataclass(frozen=True)
class Tally:
    """Requests one worker's calls into (model, version) ended with in one minute (Unix minute)."""

    model: str
    version: str
    minute: int
    pid: int
    requests: int
    rejected: int


class LogStore(Protocol):
    def write(self, model: str, version: str, day: int, rows: pa.Table) -> None: ...

    def write_tallies(self, tallies: list[Tally]) -> None: ...

    def read(self, model: str, since: float | None = None) -> pa.Table:
        """Rows logged for ``model`` at or after Unix time ``since`` (every row: None), sorted by time."""
        ...

    def first(self, model: str, n: int) -> pa.Table:
        """The oldest ``n`` rows of ``model`` (fewer when fewer exist)."""
        ...

    def tallies(self, model: str, since: float | None = None) -> pa.Table:
        """Columns of ``TALLY_SCHEMA``."""
        ...

    def models(self) -> list[str]: ...

    def load_reference(self, model: str) -> dict[str, Any] | None: ...

    def save_reference(self, model: str, summary: dict[str, Any]) -> None: ...

    def prune(self, model: str, older_than: float, max_bytes: int) -> None:
        """Remove rows logged before ``older_than``, then the oldest until ``model``'s rows take ``max_bytes``."""
        ...

    def close(self) -> None: ...


def open_store(settings: Settings) -> LogStore:
    """The SQL store with ``database_url``, else Parquet files in ``state_dir/predictions``."""
    if settings.database_url:
        from .sql import SqlStore

        return SqlStore(settings.database_url)
    from .parquet import ParquetStore

    return ParquetStore(settings.state_dir / "predictions")


def sort_by_time(table: pa.Table) -> pa.Table:
    return table.sort_by("time") if table.num_rows else table


def now() -> float:
    return time.time()
