"""The reference distribution of each feature: a compact summary, never the raw data.

For a number: 101 quantiles (the CDF the Kolmogorov-Smirnov test compares with), the inner decile edges and
the reference's count in each of the bins they make (PSI's expected shares), the missing rate, mean and
standard deviation. For a category (text, booleans; integer predictions): the count of each of the 50 most
frequent values (the rest as ``(other)``) and the missing rate. The summary is built from a file the operator
names (``--reference``, ``[monitor] reference``) or from the first ``reference_rows`` logged rows, and kept
as JSON beside the log (``store.save_reference``).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .records import INPUT, primary

QUANTILES = np.linspace(0.0, 1.0, 101)
DECILES = np.linspace(0.1, 0.9, 9)
TOP_CATEGORIES = 50
OTHER = "(other)"


def is_number(column: pa.ChunkedArray | pa.Array, *, integers: bool = True) -> bool:
    t = column.type
    return pa.types.is_floating(t) or (integers and pa.types.is_integer(t))


def numbers(column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """float64 values, NaN where missing."""
    return np.asarray(pc.cast(column, pa.float64()).to_numpy(zero_copy_only=False), dtype=np.float64)


def categories(column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """Values as text (object array), None where missing."""
    values = pc.cast(column, pa.string()) if not pa.types.is_string(column.type) else column
    return np.asarray(values.to_numpy(zero_copy_only=False), dtype=object)


def bin_counts(edges: list[float], x: np.ndarray) -> np.ndarray:
    """How many of ``x`` fall in each bin of the inner ``edges`` (first bin: below edges[0]; last: from the last)."""
    return np.bincount(np.searchsorted(np.asarray(edges), x, side="right"), minlength=len(edges) + 1)


def summarize(column: pa.ChunkedArray | pa.Array, *, integers_are_numbers: bool = True) -> dict[str, Any]:
    n = len(column)
    if is_number(column, integers=integers_are_numbers):
        x = numbers(column)
        finite = x[np.isfinite(x)]
        out: dict[str, Any] = {"kind": "number", "rows": n, "missing": float(1 - finite.size / n) if n else 0.0}
        if finite.size:
            edges = np.unique(np.quantile(finite, DECILES)).tolist()
            out.update(
                quantiles=np.quantile(finite, QUANTILES).tolist(),
                edges=edges,
                counts=bin_counts(edges, finite).tolist(),
                mean=float(finite.mean()),
                std=float(finite.std()),
            )
        return out
    values = categories(column)
    present = values[values != None]  # noqa: E711 (elementwise on an object array)
    names, counts = np.unique(present.astype(str), return_counts=True)
    order = np.argsort(-counts, kind="stable")
    freq = {str(names[i]): int(counts[i]) for i in order[:TOP_CATEGORIES]}
    rest = int(sum(int(counts[i]) for i in order[TOP_CATEGORIES:]))
    if rest:
        freq[OTHER] = rest
    return {"kind": "category", "rows": n, "missing": float(1 - present.size / n) if n else 0.0, "counts": freq}


def build(table: pa.Table, source: str, *, fingerprint: Any = None) -> dict[str, Any]:
    """The summary of every input column of ``table`` (and of its prediction, when it has one)."""
    features = {name[len(INPUT) :]: summarize(table[name]) for name in table.column_names if name.startswith(INPUT)}
    out: dict[str, Any] = {
        "source": source,
        "rows": table.num_rows,
        "created": time.time(),
        "fingerprint": fingerprint,
        "features": features,
        "prediction": None,
    }
    column = primary(table)
    if column is not None:
        out["prediction"] = {"output": column.partition(".")[2], **summarize(table[column], integers_are_numbers=False)}
    return out


def read_file(path: Path) -> pa.Table:
    """A training-data file as a table whose columns are named ``input.<column>``."""
    if path.suffix.lower() == ".parquet":
        import pyarrow.parquet as pq

        table = pq.read_table(path)
    else:
        import pyarrow.csv as pcsv

        table = pcsv.read_csv(path)
    return table.rename_columns([INPUT + c for c in table.column_names])


def file_fingerprint(path: Path) -> list[Any]:
    st = path.stat()
    return [str(path), st.st_size, st.st_mtime_ns]
