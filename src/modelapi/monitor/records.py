"""The prediction log's schema: one record per logged row, inputs and outputs flattened into scalar columns.

A 1-D input ``x`` becomes column ``input.x``; a 2-D input ``input`` of shape ``[-1, k]`` (k at most
``MAX_WIDTH``) becomes ``input.input[0]`` ... ``input.input[k-1]``; outputs likewise under ``output.``.
Wider tensors (images, embeddings) are left out of the log, as are the inputs ``model.toml`` marks sensitive.
Besides them every record carries ``time`` (UTC), ``request_id``, ``key`` (the API key's name, never the key),
``protocol``, ``latency_s`` and ``pid`` (the worker that answered); the model, version and day are the
partition (Parquet) or their own columns (SQL).
"""

from __future__ import annotations

import os
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from ..events import PredictionsServed

INPUT, OUTPUT = "input.", "output."
MAX_WIDTH = 64
META = ("time", "request_id", "key", "protocol", "latency_s", "pid")
TIME_TYPE = pa.timestamp("us", tz="UTC")
DAY_S = 86400


def flatten(arrays: Mapping[str, np.ndarray], prefix: str, leave_out: Collection[str] = ()) -> dict[str, np.ndarray]:
    """Scalar columns of ``arrays`` (first axis: rows), named ``prefix + name`` (``[i]`` for a 2-D input)."""
    out: dict[str, np.ndarray] = {}
    for name, arr in arrays.items():
        if name in leave_out:
            continue
        if arr.ndim == 1:
            out[prefix + name] = arr
        elif arr.ndim == 2 and arr.shape[1] <= MAX_WIDTH:
            for i in range(arr.shape[1]):
                out[f"{prefix}{name}[{i}]"] = arr[:, i]
    return out


def _plain(arr: np.ndarray) -> np.ndarray:
    """Bytes as text (Arrow and JSON want strings); float16 as float32 (Arrow's Parquet writer has none)."""
    if arr.dtype.kind == "S":
        return np.char.decode(arr, "utf-8", "replace")
    if arr.dtype == np.float16:
        return arr.astype(np.float32)
    return arr


@dataclass
class Pending:
    """The rows of one (model, version, day) waiting to be written."""

    model: str
    version: str
    day: int  # days since the Unix epoch, UTC
    rows: int = 0
    meta: dict[str, list[object]] = field(default_factory=lambda: {k: [] for k in META})
    #: the rows of each call: its arrays under ``input.NAME`` / ``output.NAME``, not yet flattened
    parts: list[tuple[int, dict[str, np.ndarray]]] = field(default_factory=list)

    def add(self, event: PredictionsServed, sensitive: Collection[str]) -> int:
        k = len(next(iter(event.inputs.values()))) if event.inputs else 0
        if k == 0:
            return 0
        # kept as the call's arrays: flattened and turned into Arrow once per flush, not once per request
        arrays = {INPUT + n: a for n, a in event.inputs.items() if n not in sensitive}
        arrays.update({OUTPUT + n: a for n, a in event.outputs.items()})
        meta = self.meta
        meta["time"].extend([int(event.time * 1_000_000)] * k)
        meta["request_id"].extend([event.request_id] * k)
        meta["key"].extend([event.key] * k)
        meta["protocol"].extend([event.protocol] * k)
        meta["latency_s"].extend([event.latency_s] * k)
        meta["pid"].extend([os.getpid()] * k)
        self.parts.append((k, arrays))
        self.rows += k
        return k

    def table(self) -> pa.Table:
        arrays: dict[str, pa.Array] = {
            "time": pa.array(self.meta["time"], pa.int64()).cast(TIME_TYPE),
            "request_id": pa.array(self.meta["request_id"], pa.string()),
            "key": pa.array(self.meta["key"], pa.string()),
            "protocol": pa.array(self.meta["protocol"], pa.string()),
            "latency_s": pa.array(self.meta["latency_s"], pa.float64()),
            "pid": pa.array(self.meta["pid"], pa.int32()),
        }
        # runs of parts with the same arrays (names, dtypes, widths: every call of one version, as a rule) are
        # concatenated in numpy first, so each column costs one Arrow conversion per run
        runs: list[tuple[int, dict[str, np.ndarray]]] = []
        shape: object = None
        group: list[dict[str, np.ndarray]] = []
        for _, part in self.parts:
            this = tuple((n, a.dtype.str, a.shape[1:]) for n, a in part.items())
            if this != shape and group:
                runs.append(_joined(group))
                group = []
            shape = this
            group.append(part)
        if group:
            runs.append(_joined(group))
        flat = [(k, flatten(joined, "")) for k, joined in runs]
        names: dict[str, None] = {}
        for _, columns in flat:
            names.update(dict.fromkeys(columns))
        for name in names:  # the signature's order: inputs, then outputs
            chunks = [pa.array(_plain(cols[name])) if name in cols else pa.nulls(k) for k, cols in flat]
            arrays[name] = _concat(chunks)
        return pa.table(arrays)


def _joined(parts: list[dict[str, np.ndarray]]) -> tuple[int, dict[str, np.ndarray]]:
    """Parts of one shape as one: each array concatenated along the rows."""
    if len(parts) == 1:
        only = parts[0]
        return len(next(iter(only.values()))), only
    joined = {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}
    return len(next(iter(joined.values()))), joined


def _concat(chunks: list[pa.Array]) -> pa.Array:
    types = {c.type for c in chunks if c.type != pa.null()}
    if not types:
        return pa.concat_arrays(chunks)
    target = next(iter(types)) if len(types) == 1 else _common(types)
    return pa.concat_arrays([c.cast(target) for c in chunks])


def _common(types: set[pa.DataType]) -> pa.DataType:
    if all(pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t) for t in types):
        return pa.float64()
    return pa.string()


def features(table: pa.Table, prefix: str = INPUT) -> list[str]:
    """The feature names (without the prefix) of the columns under ``prefix``."""
    return [name[len(prefix) :] for name in table.column_names if name.startswith(prefix)]


def primary(table: pa.Table) -> str | None:
    """The column that answers "what was predicted": ``prediction``, else ``label``, else the first 1-D output."""
    outputs = features(table, OUTPUT)
    for name in ("prediction", "label"):
        if name in outputs:
            return OUTPUT + name
    plain = [o for o in outputs if "[" not in o]
    return OUTPUT + plain[0] if plain else None
