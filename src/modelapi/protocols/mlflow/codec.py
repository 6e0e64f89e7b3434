"""MLflow scoring-server requests (``POST /invocations``) <-> the data plane's request and answer.

A body is a JSON object with exactly one of these keys (and optionally ``params``, which is ignored), as
``mlflow models serve`` accepts them:

* ``dataframe_split``: ``{"columns": [...], "data": [[row], ...]}`` (pandas' ``split`` orient);
* ``dataframe_records``: ``[{"column": value, ...}, ...]``;
* ``instances`` or ``inputs``: a list of rows (records, feature lists in signature order, or the single input's
  row values), or an object of input name -> list of rows.

A CSV body (``Content-Type: text/csv``) with a header row works as a data frame. The answer is
``{"predictions": [...]}``: one value per row for one output (the prediction, as MLflow's own flavours answer),
or one object per row of every output for a pyfunc model with several.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ...errors import InvalidInput
from ...inference import InferenceRequest
from ...signature import Signature
from ..common import check_row_limit, describe, primary_output, to_plain

FORMATS = ("dataframe_split", "dataframe_records", "instances", "inputs")
_EXPECTED = "one of " + ", ".join(f'"{k}"' for k in FORMATS)


def decode(body: Any, signature: Signature, *, max_rows: int | None = None) -> InferenceRequest:
    if not isinstance(body, dict):
        raise InvalidInput(f"expected a JSON object with {_EXPECTED}; got {describe(body)}")
    present = [k for k in FORMATS if k in body]
    if len(present) != 1:
        which = "none" if not present else " and ".join(f'"{k}"' for k in present)
        raise InvalidInput(f"the request has {which} of {_EXPECTED}; send exactly one")
    unknown = [k for k in body if k not in (*FORMATS, "params")]
    if unknown:
        raise InvalidInput(f"unknown field {', '.join(repr(k) for k in unknown[:20])}; expected {_EXPECTED}")
    key = present[0]
    value = body[key]
    if key == "dataframe_split":
        columns = _split(value, signature, max_rows)
    elif key == "dataframe_records":
        columns = _records(value, signature, max_rows, key)
    else:
        columns = _tensors(value, signature, max_rows, key)
    return InferenceRequest(_arrays(columns, signature))


def decode_csv(text: str, signature: Signature, *, max_rows: int | None = None) -> InferenceRequest:
    """A CSV document with a header row, read as ``dataframe_split``; cells parse as numbers where they can."""
    reader = csv.reader(io.StringIO(text))
    rows = [row for row in reader if row]
    if not rows:
        raise InvalidInput("the CSV body is empty; send a header row of column names and one row per record")
    header, data = rows[0], [[_cell(c) for c in row] for row in rows[1:]]
    return InferenceRequest(_arrays(_split({"columns": header, "data": data}, signature, max_rows), signature))


def _cell(text: str) -> Any:
    if text == "":
        return None
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def _split(value: Any, signature: Signature, max_rows: int | None) -> dict[str, list[Any]]:
    if not isinstance(value, dict) or not isinstance(value.get("data"), list):
        raise InvalidInput(
            f'"dataframe_split" expected {{"columns": [...], "data": [[...], ...]}}; got {describe(value)}'
        )
    data = value["data"]
    check_row_limit(len(data), max_rows)
    columns = value.get("columns")
    if columns is None:
        columns = signature.input_names
    if not isinstance(columns, list) or not all(isinstance(c, str) for c in columns):
        raise InvalidInput(f'"dataframe_split.columns" expected a list of column names; got {describe(columns)}')
    out: dict[str, list[Any]] = {c: [] for c in columns}
    for i, row in enumerate(data):
        if not isinstance(row, list) or len(row) != len(columns):
            raise InvalidInput(
                f'"dataframe_split.data" row {i}: expected a list of {len(columns)} values '
                f"({', '.join(columns)}); got {describe(row)}"
            )
        for c, v in zip(columns, row, strict=True):
            out[c].append(v)
    return _fit(out, signature, "dataframe_split.columns")


def _records(value: Any, signature: Signature, max_rows: int | None, key: str) -> dict[str, list[Any]]:
    if not isinstance(value, list) or not value:
        raise InvalidInput(f'"{key}" expected a non-empty list of records (objects); got {describe(value)}')
    check_row_limit(len(value), max_rows)
    names = list(value[0]) if isinstance(value[0], dict) else []
    out: dict[str, list[Any]] = {n: [] for n in names}
    for i, record in enumerate(value):
        if not isinstance(record, dict) or set(record) != set(names):
            want = f"an object with the same keys as record 0 ({', '.join(names)})"
            raise InvalidInput(f'"{key}" record {i}: expected {want}; got {describe(record)}')
        for n in names:
            out[n].append(record[n])
    return _fit(out, signature, key)


def _tensors(value: Any, signature: Signature, max_rows: int | None, key: str) -> dict[str, list[Any]]:
    names = signature.input_names
    if isinstance(value, dict):
        out: dict[str, list[Any]] = {}
        for name, rows in value.items():
            if not isinstance(rows, list) or not rows:
                raise InvalidInput(f'"{key}.{name}": expected a non-empty list of rows; got {describe(rows)}')
            check_row_limit(len(rows), max_rows)
            out[name] = rows
        return _fit(out, signature, key)
    if not isinstance(value, list) or not value:
        raise InvalidInput(
            f'"{key}" expected a non-empty list of rows, or an object of input -> rows; got {describe(value)}'
        )
    check_row_limit(len(value), max_rows)
    if isinstance(value[0], dict):
        return _records(value, signature, max_rows, key)
    if len(names) == 1:
        return {names[0]: value}
    if all(not s.row_shape for s in signature.inputs):
        return _split({"columns": names, "data": value}, signature, max_rows)
    raise InvalidInput(
        f'"{key}": this model takes several inputs ({", ".join(names)}); send an object of input -> rows'
    )


def _fit(columns: dict[str, list[Any]], signature: Signature, where: str) -> dict[str, list[Any]]:
    """Columns named as the signature's inputs; a single matrix input takes its columns in order."""
    names = signature.input_names
    if set(columns) == set(names):
        return columns
    spec = signature.inputs[0]
    if len(names) == 1 and len(spec.row_shape) == 1 and spec.row_shape[0] in (-1, len(columns)) and columns:
        return {spec.name: [list(row) for row in zip(*columns.values(), strict=True)]}
    missing = [n for n in names if n not in columns]
    unknown = [n for n in columns if n not in names]
    parts = ([f"missing {', '.join(repr(n) for n in missing)}"] if missing else []) + (
        [f"unknown {', '.join(repr(n) for n in unknown[:20])}"] if unknown else []
    )
    raise InvalidInput(f'"{where}": {"; ".join(parts)}; the model takes {", ".join(names)}')


def _arrays(columns: Mapping[str, Sequence[Any]], signature: Signature) -> dict[str, np.ndarray]:
    out = {}
    for spec in signature.inputs:
        values = columns[spec.name]
        if not spec.row_shape:
            arr = np.empty(len(values), dtype=object)
            arr[:] = list(values)
        else:
            try:
                arr = np.asarray(values)
            except ValueError:
                raise InvalidInput(
                    f"input '{spec.name}': rows of different shapes; each row needs shape {list(spec.row_shape)}"
                ) from None
        out[spec.name] = arr
    return out


# answers ----------------------------------------------------------------------------------------------------
def answer_outputs(signature: Signature, invocation_outputs: Sequence[str] | None) -> list[str]:
    """The outputs an answer carries: the model's choice, else the prediction (``prediction``, ``label``, first)."""
    if invocation_outputs:
        return list(invocation_outputs)
    primary = primary_output(signature)
    return [] if primary is None else [primary]


def encode(outputs: Mapping[str, np.ndarray], names: Sequence[str]) -> dict[str, Any]:
    """``{"predictions": ...}`` from the outputs ``names`` (see ``answer_outputs``)."""
    columns = {name: list(to_plain(np.asarray(outputs[name]))) for name in names}
    if len(columns) == 1:
        return {"predictions": next(iter(columns.values()))}
    rows = len(next(iter(columns.values())))
    return {"predictions": [{name: values[i] for name, values in columns.items()} for i in range(rows)]}
