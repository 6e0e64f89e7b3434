"""SqlStore: the prediction log in the ``--database-url`` database (PostgreSQL; any SQLAlchemy URL works).

Three tables, created on first use: ``modelapi_prediction_rows`` (one row per logged row: model, version, time,
request id, key name, protocol, latency, pid, and the inputs and outputs as JSON objects keyed by column,
``bytes``: their size, for retention by size), ``modelapi_prediction_requests`` (per-minute tallies of every
worker) and ``modelapi_prediction_references`` (the reference summary as JSON text).
"""

from __future__ import annotations

import json
import math
import threading
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa
import sqlalchemy as sa
from sqlalchemy import func

from ..db import create_tables, make_engine
from .records import INPUT, OUTPUT
from .store import TALLY_SCHEMA, Tally

metadata = sa.MetaData()
ROWS = sa.Table(
    "modelapi_prediction_rows",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True, autoincrement=True),
    sa.Column("model", sa.String(200), nullable=False),
    sa.Column("version", sa.String(64), nullable=False),
    sa.Column("time", sa.DateTime(timezone=True), nullable=False),
    sa.Column("request_id", sa.String(200)),
    sa.Column("key", sa.String(200)),
    sa.Column("protocol", sa.String(32)),
    sa.Column("latency_s", sa.Float),
    sa.Column("pid", sa.Integer),
    sa.Column("inputs", sa.JSON, nullable=False),
    sa.Column("outputs", sa.JSON, nullable=False),
    sa.Column("bytes", sa.Integer, nullable=False),
    sa.Index("ix_modelapi_prediction_rows_model_time", "model", "time"),
)
REQUESTS = sa.Table(
    "modelapi_prediction_requests",
    metadata,
    sa.Column("model", sa.String(200), nullable=False),
    sa.Column("version", sa.String(64), nullable=False),
    sa.Column("minute", sa.BigInteger, nullable=False),
    sa.Column("pid", sa.Integer, nullable=False),
    sa.Column("requests", sa.BigInteger, nullable=False),
    sa.Column("rejected", sa.BigInteger, nullable=False),
    sa.Index("ix_modelapi_prediction_requests_model_minute", "model", "minute"),
)
REFERENCES = sa.Table(
    "modelapi_prediction_references",
    metadata,
    sa.Column("model", sa.String(200), primary_key=True),
    sa.Column("summary", sa.Text, nullable=False),
)


def _json_value(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None  # JSON has no NaN (PostgreSQL's json type refuses it)
    if isinstance(value, datetime):
        return value.isoformat()
    return value


class SqlStore:
    def __init__(self, url: str) -> None:
        self.engine = make_engine(url, pool_pre_ping=True)
        self._created = False
        self._lock = threading.Lock()

    def _ready(self) -> sa.Engine:
        if not self._created:
            with self._lock:  # the writer thread and a reader of this process
                create_tables(self.engine, metadata)  # another worker may create the same table at once
                self._created = True
        return self.engine

    def write(self, model: str, version: str, day: int, rows: pa.Table) -> None:
        records = []
        for row in rows.to_pylist():
            inputs = {k[len(INPUT) :]: _json_value(v) for k, v in row.items() if k.startswith(INPUT)}
            outputs = {k[len(OUTPUT) :]: _json_value(v) for k, v in row.items() if k.startswith(OUTPUT)}
            size = len(json.dumps(inputs)) + len(json.dumps(outputs))
            records.append(
                {
                    "model": model,
                    "version": version,
                    "time": row["time"],
                    "request_id": row["request_id"],
                    "key": row["key"],
                    "protocol": row["protocol"],
                    "latency_s": row["latency_s"],
                    "pid": row["pid"],
                    "inputs": inputs,
                    "outputs": outputs,
                    "bytes": size,
                }
            )
        if records:
            with self._ready().begin() as conn:
                conn.execute(ROWS.insert(), records)

    def write_tallies(self, tallies: list[Tally]) -> None:
        if tallies:
            with self._ready().begin() as conn:
                conn.execute(REQUESTS.insert(), [t.__dict__ for t in tallies])

    def _table(self, query: sa.Select[Any]) -> pa.Table:
        with self._ready().connect() as conn:
            result = conn.execute(query).mappings().all()
        rows = []
        for r in result:
            when = r["time"] if r["time"].tzinfo else r["time"].replace(tzinfo=UTC)  # SQLite drops the zone
            row: dict[str, Any] = {
                "time": when,
                "request_id": r["request_id"],
                "key": r["key"],
                "protocol": r["protocol"],
                "latency_s": r["latency_s"],
                "pid": r["pid"],
                "version": r["version"],
            }
            row.update({INPUT + k: v for k, v in r["inputs"].items()})
            row.update({OUTPUT + k: v for k, v in r["outputs"].items()})
            rows.append(row)
        if not rows:
            return pa.table({"time": pa.array([], pa.timestamp("us", tz="UTC")), "version": pa.array([], pa.string())})
        # every row's columns, null where a row lacks one (an input marked sensitive when it was logged):
        # Table.from_pylist would take the first row's alone and drop the others' everywhere
        names = dict.fromkeys(name for row in rows for name in row)
        table = pa.table({name: pa.array([row.get(name) for row in rows]) for name in names})
        return table.set_column(0, "time", table["time"].cast(pa.timestamp("us", tz="UTC")))

    def read(self, model: str, since: float | None = None) -> pa.Table:
        query = sa.select(ROWS).where(ROWS.c.model == model).order_by(ROWS.c.time, ROWS.c.id)
        if since is not None:
            query = query.where(ROWS.c.time >= datetime.fromtimestamp(since, UTC))
        return self._table(query)

    def first(self, model: str, n: int) -> pa.Table:
        return self._table(sa.select(ROWS).where(ROWS.c.model == model).order_by(ROWS.c.time, ROWS.c.id).limit(n))

    def tallies(self, model: str, since: float | None = None) -> pa.Table:
        query = sa.select(REQUESTS.c.version, REQUESTS.c.minute, REQUESTS.c.pid, REQUESTS.c.requests,
                          REQUESTS.c.rejected).where(REQUESTS.c.model == model)  # fmt: skip
        if since is not None:
            query = query.where(REQUESTS.c.minute >= int(since // 60))
        with self._ready().connect() as conn:
            rows = [dict(r) for r in conn.execute(query).mappings().all()]
        return pa.Table.from_pylist(rows, schema=TALLY_SCHEMA)

    def models(self) -> list[str]:
        with self._ready().connect() as conn:
            return sorted(r[0] for r in conn.execute(sa.select(ROWS.c.model).distinct()))

    def load_reference(self, model: str) -> dict[str, Any] | None:
        with self._ready().connect() as conn:
            text = conn.execute(sa.select(REFERENCES.c.summary).where(REFERENCES.c.model == model)).scalar()
        if text is None:
            return None
        data: dict[str, Any] = json.loads(text)
        return data

    def save_reference(self, model: str, summary: dict[str, Any]) -> None:
        with self._ready().begin() as conn:
            conn.execute(REFERENCES.delete().where(REFERENCES.c.model == model))
            conn.execute(REFERENCES.insert(), {"model": model, "summary": json.dumps(summary)})

    def prune(self, model: str, older_than: float, max_bytes: int) -> None:
        with self._ready().begin() as conn:
            conn.execute(
                ROWS.delete().where(ROWS.c.model == model, ROWS.c.time < datetime.fromtimestamp(older_than, UTC))
            )
            conn.execute(REQUESTS.delete().where(REQUESTS.c.model == model, REQUESTS.c.minute < int(older_than // 60)))
            # the newest rows whose sizes add up to max_bytes stay; the first id past that point and older go
            running = func.sum(ROWS.c.bytes).over(order_by=ROWS.c.id.desc()).label("running")
            inner = sa.select(ROWS.c.id, running).where(ROWS.c.model == model).subquery()
            cut = conn.execute(sa.select(func.max(inner.c.id)).where(inner.c.running > max_bytes)).scalar()
            if cut is not None:
                conn.execute(ROWS.delete().where(ROWS.c.model == model, ROWS.c.id <= cut))

    def close(self) -> None:
        self.engine.dispose()
