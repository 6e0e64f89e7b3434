"""Job inputs: CSV, JSON records, JSON Lines and Parquet -> fixed-size row chunks, and chunks -> model inputs.

Splitting (at submission) streams the upload, never holding more of it than a chunk and a parser's buffer (CSV
in 1 MiB blocks, Parquet by row groups, JSON Lines by line, a JSON list record by record with ijson), so the
server's memory does not grow with the upload's size. It checks only the upload's structure: that it parses, is
not empty and names exactly the model's inputs. Values are checked when a chunk runs, so a bad value fails the
job with the row (1-based, the CSV header not counted) and the column. Chunk boundaries depend only on the input
and the chunk size, so a resumed job computes exactly the chunks an uninterrupted one would.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import ijson
import numpy as np
import orjson
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from ..datatypes import json_type
from ..errors import InvalidInput, MalformedRequest, UnsupportedMediaType
from ..protocols.records.codec import check_names, column, value_problem
from ..protocols.records.query import parse_text
from ..signature import Signature, TensorSpec

InputFormat = Literal["csv", "json", "ndjson", "parquet"]
MEDIA_TYPES: dict[str, InputFormat] = {
    "text/csv": "csv",
    "application/csv": "csv",
    "application/json": "json",
    "application/x-ndjson": "ndjson",
    "application/jsonl": "ndjson",
    "application/vnd.apache.parquet": "parquet",
    "application/x-parquet": "parquet",
}
SUFFIXES: dict[str, InputFormat] = {
    ".csv": "csv",
    ".json": "json",
    ".ndjson": "ndjson",
    ".jsonl": "ndjson",
    ".parquet": "parquet",
}
ACCEPTED = "text/csv, application/json (a list of records), application/x-ndjson or application/vnd.apache.parquet"


class BadValue(InvalidInput):
    """A value that does not fit the model: names its row (1-based) and column."""

    def __init__(self, row: int, column: str | None, problem: str) -> None:
        super().__init__(f"row {row}, column {problem}" if column else f"row {row}: {problem}")
        self.row = row
        self.column = column


@dataclass(frozen=True)
class Chunk:
    """Rows of input as stored: ``arrow`` (an Arrow IPC stream) or ``json`` (a JSON list of records)."""

    rows: int
    kind: str
    data: bytes


def format_of(content_type: str | None, filename: str | None = None) -> InputFormat:
    """The input format from a media type, or from a file name's suffix when the type says nothing."""
    media = (content_type or "").split(";", 1)[0].strip().lower()
    if media in MEDIA_TYPES:
        return MEDIA_TYPES[media]
    if filename:
        suffix = Path(filename).suffix.lower()
        if suffix in SUFFIXES:
            return SUFFIXES[suffix]
    if media in ("", "application/octet-stream") and filename is None:
        raise UnsupportedMediaType(f"say what the batch is with a Content-Type header: {ACCEPTED}")
    raise UnsupportedMediaType(f"content type '{media or content_type}' is not a batch format; send {ACCEPTED}")


def split(path: Path, fmt: InputFormat, signature: Signature, chunk_rows: int) -> Iterator[Chunk]:
    """Chunks of ``chunk_rows`` rows (the last may be smaller); raises a 4xx error for a broken input."""
    if path.stat().st_size == 0:
        raise InvalidInput("the batch is empty; send at least a header and one row")
    produced = False
    if fmt in ("json", "ndjson"):
        chunks: Iterator[Chunk] = _split_json(path, fmt, signature, chunk_rows)
    else:
        chunks = _rebatch(_arrow_batches(path, fmt, signature), chunk_rows)
    for chunk in chunks:
        produced = True
        yield chunk
    if not produced:
        raise InvalidInput("the batch has no rows; send at least one")


# arrow-based formats --------------------------------------------------------------------------------------
def _arrow_batches(path: Path, fmt: InputFormat, signature: Signature) -> Iterator[pa.RecordBatch]:
    try:
        if fmt == "csv":
            nested = [s.name for s in signature.inputs if s.row_shape]
            if nested:
                raise InvalidInput(
                    f"CSV holds one value per cell, but input {', '.join(nested)} is an array per row; "
                    "send JSON records or Parquet instead"
                )
            types = {name: pa.string() for name in signature.input_names}
            reader: Any = pacsv.open_csv(
                path,
                read_options=pacsv.ReadOptions(block_size=1 << 20),
                convert_options=pacsv.ConvertOptions(column_types=types, strings_can_be_null=False),
            )
            names = reader.schema.names
        else:
            parquet = pq.ParquetFile(path)
            names = parquet.schema_arrow.names
            reader = parquet.iter_batches(batch_size=65536)
        check_names(names, signature, f"{fmt.upper()} columns", "columns")
        yield from reader
    except pa.ArrowInvalid as exc:
        raise MalformedRequest(f"the {fmt.upper()} batch cannot be read: {_arrow_message(exc)}") from None


def _arrow_message(exc: Exception) -> str:
    return str(exc).splitlines()[0][:300]


def _rebatch(batches: Iterator[pa.RecordBatch], chunk_rows: int) -> Iterator[Chunk]:
    pending: list[pa.RecordBatch] = []
    count = 0
    for batch in batches:
        while batch.num_rows:
            take = min(batch.num_rows, chunk_rows - count)
            pending.append(batch.slice(0, take))
            count += take
            batch = batch.slice(take)
            if count == chunk_rows:
                yield _arrow_chunk(pending)
                pending, count = [], 0
    if count:
        yield _arrow_chunk(pending)


def _arrow_chunk(batches: list[pa.RecordBatch]) -> Chunk:
    table = pa.Table.from_batches(batches)
    sink = io.BytesIO()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return Chunk(table.num_rows, "arrow", sink.getvalue())


# JSON -----------------------------------------------------------------------------------------------------
def _split_json(path: Path, fmt: InputFormat, signature: Signature, chunk_rows: int) -> Iterator[Chunk]:
    records = _json_list(path) if fmt == "json" else _json_lines(path)
    pending: list[Any] = []
    first = True
    for record in records:
        if first:
            if not isinstance(record, dict):
                raise InvalidInput(f"each record is a JSON object of named fields; got {type(record).__name__}")
            check_names(record, signature, "the first record")
            first = False
        pending.append(record)
        if len(pending) == chunk_rows:
            yield Chunk(len(pending), "json", orjson.dumps(pending))
            pending = []
    if pending:
        yield Chunk(len(pending), "json", orjson.dumps(pending))


def _json_list(path: Path) -> Iterator[Any]:
    """The records of a JSON list, one at a time (ijson over the file, 64 KiB reads): a 2 GiB list is never
    parsed whole. Numbers come as Python floats and ints, as orjson would give them."""
    with path.open("rb") as f:
        start = f.read(64).lstrip()
        if not start.startswith(b"["):
            if start[:1] and start[:1] in b'{"0123456789-tfn':
                raise InvalidInput("a JSON batch is a list of records, e.g. [{...}, {...}]; got a single value")
            raise MalformedRequest("the batch is not valid JSON: expected a list of records, [{...}, {...}]")
        f.seek(0)
        try:
            yield from ijson.items(f, "item", use_float=True, buf_size=65536)
        except ijson.JSONError as exc:
            raise MalformedRequest(f"the batch is not valid JSON: {str(exc).splitlines()[0][:200]}") from None


def _json_lines(path: Path) -> Iterator[Any]:
    with path.open("rb") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                yield orjson.loads(line)
            except orjson.JSONDecodeError as exc:
                raise MalformedRequest(f"line {number} is not valid JSON: {exc}") from None


# chunk -> model inputs ------------------------------------------------------------------------------------
def decode_chunk(chunk: Chunk, signature: Signature, first_row: int) -> dict[str, np.ndarray]:
    """A stored chunk -> one array per input; ``InvalidInput`` names the row (1-based) and column."""
    if chunk.kind == "json":
        return _decode_records(orjson.loads(chunk.data), signature, first_row)
    table = pa.ipc.open_stream(chunk.data).read_all()
    return {spec.name: _decode_column(spec, table.column(spec.name), first_row) for spec in signature.inputs}


def _decode_records(records: list[Any], signature: Signature, first_row: int) -> dict[str, np.ndarray]:
    names = signature.input_names
    columns: dict[str, list[Any]] = {n: [] for n in names}
    for i, record in enumerate(records):
        row = first_row + i + 1
        if not isinstance(record, dict):
            raise BadValue(row, None, f"expected an object of named fields, got {type(record).__name__}")
        if len(record) != len(names) or not all(n in record for n in names):
            try:
                check_names(record, signature, f"row {row}")
            except InvalidInput as exc:
                raise BadValue(row, None, exc.detail.split(": ", 1)[1]) from None
        for spec in signature.inputs:
            value = record[spec.name]
            problem = value_problem(spec, value)
            if problem is not None:
                raise BadValue(row, spec.name, problem)
            columns[spec.name].append(value)
    return {spec.name: column(spec, columns[spec.name]) for spec in signature.inputs}


_ARROW_TARGETS = {"number": pa.float64(), "integer": pa.int64(), "boolean": pa.bool_()}


def _decode_column(spec: TensorSpec, col: pa.ChunkedArray, first_row: int) -> np.ndarray:
    kind = json_type(spec.datatype)
    if spec.row_shape or col.null_count:
        return _slow_column(spec, col, first_row)
    if kind == "string":
        if pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
            return np.asarray(col.to_numpy(zero_copy_only=False), dtype=object)
        return _slow_column(spec, col, first_row)
    try:
        arr: np.ndarray = np.asarray(col.cast(_ARROW_TARGETS[kind]).to_numpy())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return _slow_column(spec, col, first_row)
    if kind == "number" and not spec.allow_nonfinite:
        bad = np.flatnonzero(~np.isfinite(arr))
        if bad.size:
            i = int(bad[0])
            text = col[i].as_py()
            raise BadValue(first_row + i + 1, spec.name, f"'{spec.name}' expected a number, got {text!r}")
    return arr


def _slow_column(spec: TensorSpec, col: pa.ChunkedArray, first_row: int) -> np.ndarray:
    """Value by value, for the error message, strings and nested or nullable columns."""
    values = col.to_pylist()
    text_column = pa.types.is_string(col.type) and json_type(spec.datatype) != "string"
    out: list[Any] = []
    for i, value in enumerate(values):
        if text_column and isinstance(value, str):
            value = parse_text(spec, value)
        problem = value_problem(spec, value)
        if problem is not None:
            raise BadValue(first_row + i + 1, spec.name, problem)
        out.append(value)
    return column(spec, out)
