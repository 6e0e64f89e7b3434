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
from typing import Final

import numpy as np
import pyarrow as pa

from ..events import PredictionsServed

INPUT, OUTPUT = "input.", "output."
MAX_WIDTH = 64
META = ("time", "request_id", "key", "protocol", "latency_s", "pid")
TIME_TYPE = pa.timestamp("us", tz="UTC")
DAY_S = 86400

#: One call as queued for the log: its ``PredictionsServed``'s fields, in a plain tuple (read them with the
#: indexes below). The garbage collector stops tracking a tuple of untracked objects (strings, floats, dicts of
#: arrays) at its first collection, while an event object it would walk in every collection until the writer
#: took it, and each one kept alive makes full collections (which walk every object made since start-up) come
#: sooner.
Call = tuple[str, str, str, str | None, str | None, float, float, Mapping[str, np.ndarray], Mapping[str, np.ndarray]]
MODEL: Final = 0
VERSION: Final = 1
PROTOCOL: Final = 2
REQUEST_ID: Final = 3
KEY: Final = 4
TIME: Final = 5
LATENCY_S: Final = 6
INPUTS: Final = 7
OUTPUTS: Final = 8


def as_call(e: PredictionsServed) -> Call:
    return (e.model, e.version, e.protocol, e.request_id, e.key, e.time, e.latency_s, e.inputs, e.outputs)


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
    """The rows of one (model, version, day) waiting to be written: the calls' events as they came, turned into
    columns by ``compact()`` (a few numpy and Arrow operations per column, not per call; the events are let go)
    and into one table by ``table()``."""

    model: str
    version: str
    day: int  # days since the Unix epoch, UTC
    rows: int = 0
    calls: list[Call] = field(default_factory=list)
    counts: list[int] = field(default_factory=list)  # each event's rows
    sensitive: frozenset[str] = frozenset()  # the inputs left out
    #: the calls compacted so far: their metadata columns, and their arrays in runs of same-shaped calls
    meta: list[dict[str, pa.Array]] = field(default_factory=list)
    runs: list[tuple[int, dict[str, np.ndarray]]] = field(default_factory=list)

    def add(self, event: PredictionsServed, sensitive: Collection[str]) -> int:
        k = len(next(iter(event.inputs.values()))) if event.inputs else 0
        if k:
            self.extend([as_call(event)], [k], sensitive)
        return k

    def extend(self, calls: list[Call], counts: list[int], sensitive: Collection[str]) -> None:
        """Add calls of at least one row each, ``counts`` their rows."""
        if sensitive:
            self.sensitive = self.sensitive.union(sensitive)
        self.calls += calls
        self.counts += counts
        self.rows += sum(counts)

    def compact(self) -> None:
        """Turn the calls added since the last time into columns and drop their events."""
        events, counts = self.calls, self.counts
        if not events:
            return
        n = sum(counts)
        # a call's metadata is repeated on each of its rows: an index, unless every call had one row
        index = None if n == len(events) else np.repeat(np.arange(len(events)), counts)

        def each(values: np.ndarray) -> np.ndarray:
            return values if index is None else values[index]

        def text(values: list[str | None]) -> pa.Array:
            arr = pa.array(values, pa.string())
            return arr if index is None else arr.take(pa.array(index))

        micros = (np.array([e[TIME] for e in events], np.float64) * 1_000_000).astype(np.int64)
        self.meta.append(
            {
                "time": pa.array(each(micros)).cast(TIME_TYPE),
                "request_id": text([e[REQUEST_ID] for e in events]),
                "key": text([e[KEY] for e in events]),
                "protocol": text([e[PROTOCOL] for e in events]),
                "latency_s": pa.array(each(np.array([e[LATENCY_S] for e in events], np.float64))),
                "pid": pa.array(np.full(n, os.getpid(), np.int32)),
            }
        )
        self.runs += _runs(events, n, self.sensitive)
        self.calls, self.counts = [], []

    def table(self) -> pa.Table:
        self.compact()
        if not self.meta:
            types = (TIME_TYPE, pa.string(), pa.string(), pa.string(), pa.float64(), pa.int32())
            return pa.table({name: pa.array([], t) for name, t in zip(META, types, strict=True)})
        arrays: dict[str, pa.Array] = {
            name: self.meta[0][name] if len(self.meta) == 1 else pa.concat_arrays([m[name] for m in self.meta])
            for name in META
        }
        flat = [(k, flatten(joined, "")) for k, joined in self.runs]
        names: dict[str, None] = {}
        for _, columns in flat:
            names.update(dict.fromkeys(columns))
        for name in names:  # the signature's order: inputs, then outputs
            chunks = [pa.array(_plain(cols[name])) if name in cols else pa.nulls(k) for k, cols in flat]
            arrays[name] = _concat(chunks)
        return pa.table(arrays)


def _runs(events: list[Call], n: int, sensitive: frozenset[str]) -> list[tuple[int, dict[str, np.ndarray]]]:
    """The calls' arrays as runs of same-shaped calls, each run's arrays joined along the rows. As a rule every
    call of one version has the same arrays (names, dtypes, widths), so that is tried first, one numpy
    concatenation per array; otherwise each call's arrays are compared with the previous call's."""
    one = _one_run(events, n, sensitive)
    if one is not None:
        return [one]
    runs: list[tuple[int, dict[str, np.ndarray]]] = []
    shape: object = None
    group: list[dict[str, np.ndarray]] = []
    for event in events:
        part = {INPUT + n: a for n, a in event[INPUTS].items() if n not in sensitive}
        part.update({OUTPUT + n: a for n, a in event[OUTPUTS].items()})
        this = tuple((n, a.dtype.str, a.shape[1:]) for n, a in part.items())
        if this != shape and group:
            runs.append(_joined(group))
            group = []
        shape = this
        group.append(part)
    if group:
        runs.append(_joined(group))
    return runs


def _one_run(events: list[Call], n: int, sensitive: frozenset[str]) -> tuple[int, dict[str, np.ndarray]] | None:
    """All the calls' arrays joined, if they have the same names, dtypes and widths; else None."""
    first = events[0]
    sizes = (len(first[INPUTS]), len(first[OUTPUTS]))
    if any((len(e[INPUTS]), len(e[OUTPUTS])) != sizes for e in events):
        return None
    joined: dict[str, np.ndarray] = {}
    try:  # same sizes and every name of the first present: the same names
        for name in first[INPUTS]:
            arrays = [e[INPUTS][name] for e in events]
            if name not in sensitive:
                joined[INPUT + name] = _same(arrays)
        for name in first[OUTPUTS]:
            joined[OUTPUT + name] = _same([e[OUTPUTS][name] for e in events])
    except (KeyError, TypeError, ValueError):  # a name missing, another dtype (casting "no") or width
        return None
    return n, joined


def _same(arrays: list[np.ndarray]) -> np.ndarray:
    """One array of same-typed arrays (text of any length), or TypeError / ValueError."""
    if len(arrays) == 1:
        return arrays[0]
    return np.concatenate(arrays, casting="same_kind" if arrays[0].dtype.kind in "US" else "no")


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
