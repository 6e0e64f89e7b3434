"""Job results: model outputs <-> stored Arrow chunks, and chunks -> JSON, JSON Lines, CSV or Parquet, streamed.

JSON rows read exactly like the answers of ``/models/{name}/predict`` (``prediction``, ``probabilities`` keyed
by class label, ...). CSV and Parquet are flat: one column per output of one value per row, and one column per
position of a wider output, named ``key.label`` (``probabilities.setosa``) or ``key.0``, ``key.1``...
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, Literal

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from ..errors import NotAcceptable
from ..protocols.records.codec import answer_keys, encode_rows, labelled
from ..signature import Signature

OutputFormat = Literal["json", "ndjson", "csv", "parquet"]
MEDIA: dict[OutputFormat, str] = {
    "json": "application/json",
    "ndjson": "application/x-ndjson",
    "csv": "text/csv; charset=utf-8",
    "parquet": "application/vnd.apache.parquet",
}
_BY_MEDIA: dict[str, OutputFormat] = {
    "application/json": "json",
    "application/*": "json",
    "*/*": "json",
    "application/x-ndjson": "ndjson",
    "application/jsonl": "ndjson",
    "text/csv": "csv",
    "text/*": "csv",
    "application/csv": "csv",
    "application/vnd.apache.parquet": "parquet",
    "application/x-parquet": "parquet",
}


_BY_NAME: dict[str, OutputFormat] = {"json": "json", "ndjson": "ndjson", "csv": "csv", "parquet": "parquet"}


def negotiate(accept: str | None, format_param: str | None = None) -> OutputFormat:
    """``?format=`` wins; else the ``Accept`` entry with the highest q that we can write; else JSON."""
    if format_param:
        if format_param not in _BY_NAME:
            raise NotAcceptable(f"format '{format_param}' is not offered; one of {', '.join(MEDIA)}")
        return _BY_NAME[format_param]
    if not accept or not accept.strip():
        return "json"
    offers: list[tuple[float, int, OutputFormat]] = []
    for position, part in enumerate(accept.split(",")):
        media, *params = (p.strip() for p in part.split(";"))
        q = 1.0
        for param in params:
            if param.startswith("q="):
                try:
                    q = float(param[2:])
                except ValueError:
                    q = 0.0
        fmt = _BY_MEDIA.get(media.lower())
        if fmt is not None and q > 0:
            offers.append((-q, position, fmt))
    if not offers:
        raise NotAcceptable(f"cannot answer as '{accept}'; results come as {', '.join(MEDIA.values())}")
    return min(offers)[2]


# outputs <-> stored chunks --------------------------------------------------------------------------------
def _to_arrow(arr: np.ndarray) -> pa.Array:
    if arr.ndim == 1:
        if arr.dtype.kind == "O":
            return pa.array(arr.tolist())
        return pa.array(arr)
    flat = _to_arrow(arr.reshape(-1))
    for size in reversed(arr.shape[1:]):
        flat = pa.FixedSizeListArray.from_arrays(flat, size)
    return flat


def _from_arrow(col: pa.ChunkedArray | pa.Array) -> np.ndarray:
    arr = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    dims: list[int] = []
    while pa.types.is_fixed_size_list(arr.type):
        dims.append(arr.type.list_size)
        arr = arr.flatten()
    values: np.ndarray = np.asarray(arr.to_numpy(zero_copy_only=False))
    if values.dtype.kind in "US":
        values = values.astype(object)
    return values.reshape(-1, *dims) if dims else values


def outputs_to_ipc(outputs: Mapping[str, np.ndarray]) -> bytes:
    table = pa.table({name: _to_arrow(np.asarray(arr)) for name, arr in outputs.items()})
    sink = io.BytesIO()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue()


def ipc_to_outputs(data: bytes) -> dict[str, np.ndarray]:
    table = pa.ipc.open_stream(data).read_all()
    return {name: _from_arrow(table.column(name)) for name in table.column_names}


def flat_columns(outputs: Mapping[str, np.ndarray], signature: Signature) -> dict[str, np.ndarray]:
    """Outputs -> named 1-D columns, prediction first, as CSV and Parquet results carry them."""
    keys = answer_keys(signature)
    order = sorted(outputs, key=lambda n: list(keys).index(n) if n in keys else len(keys))
    columns: dict[str, np.ndarray] = {}
    for name in order:
        arr = np.asarray(outputs[name])
        key = keys.get(name, name)
        if arr.ndim == 1:
            columns[key] = arr
            continue
        labels = labelled(signature.output(name), arr) if arr.ndim == 2 else None
        for index in np.ndindex(*arr.shape[1:]):
            suffix = labels[index[0]] if labels is not None else ".".join(str(i) for i in index)
            columns[f"{key}.{suffix}"] = arr[(slice(None), *index)]
    return columns


# streaming a result ---------------------------------------------------------------------------------------
class _Drain(io.RawIOBase):
    """A write-only sink the Parquet writer fills; ``take()`` hands over what was written since last time."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []
        self._pos = 0

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        chunk = bytes(data)
        self._parts.append(chunk)
        self._pos += len(chunk)
        return len(chunk)

    def tell(self) -> int:
        return self._pos

    def take(self) -> bytes:
        out = b"".join(self._parts)
        self._parts.clear()
        return out


def stream(chunks: Iterable[bytes], fmt: OutputFormat, signature: Signature) -> Iterator[bytes]:
    """The result document, one stored chunk at a time."""
    if fmt == "json":
        yield b"["
        first = True
        for data in chunks:
            body = orjson.dumps(encode_rows(ipc_to_outputs(data), signature), option=orjson.OPT_SERIALIZE_NUMPY)
            if len(body) > 2:
                yield (b"" if first else b",") + body[1:-1]
                first = False
        yield b"]"
    elif fmt == "ndjson":
        for data in chunks:
            rows = encode_rows(ipc_to_outputs(data), signature)
            yield b"".join(orjson.dumps(row, option=orjson.OPT_SERIALIZE_NUMPY) + b"\n" for row in rows)
    elif fmt == "csv":
        header = True
        for data in chunks:
            sink = io.BytesIO()
            table = _flat_table(data, signature)
            pacsv.write_csv(table, sink, write_options=pacsv.WriteOptions(include_header=header))
            header = False
            yield sink.getvalue()
    else:
        drain = _Drain()
        writer: pq.ParquetWriter | None = None
        for data in chunks:
            table = _flat_table(data, signature)
            if writer is None:
                writer = pq.ParquetWriter(drain, table.schema)
            writer.write_table(table)
            yield drain.take()
        if writer is not None:
            writer.close()
        yield drain.take()


def _flat_table(data: bytes, signature: Signature) -> pa.Table:
    columns = flat_columns(ipc_to_outputs(data), signature)
    return pa.table({name: _to_arrow(arr) for name, arr in columns.items()})
