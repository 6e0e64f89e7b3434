"""Rows in and out of ``predict``: dicts, lists of dicts, DataFrames and 2-D arrays -> JSON records, and the
friendly API's answers -> a DataFrame.

A DataFrame answer has one row per input row (the input DataFrame's index kept) and flat columns, as job
results in CSV and Parquet have them: ``prediction``, then ``probabilities.<class>`` per class, and any other
output as ``<name>`` or ``<name>.<label or position>``. pandas is imported only when a DataFrame is involved.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import pandas as pd


def is_dataframe(data: Any) -> bool:
    """A pandas DataFrame, without importing pandas when the caller never did."""
    cls = type(data)
    return cls.__name__ == "DataFrame" and cls.__module__.startswith("pandas")


def records_of(data: Any, inputs: Sequence[Mapping[str, Any]] | None = None) -> list[dict[str, Any]] | dict[str, Any]:
    """The JSON body for ``data``. ``inputs``: the model's inputs (V2 metadata), needed for a numpy array."""
    if isinstance(data, Mapping):
        return dict(data)
    if is_dataframe(data):
        if not data.columns.is_unique:
            raise ValueError("the DataFrame has repeated column names; each column must name one model input")
        return [{str(k): v for k, v in row.items()} for row in data.to_dict(orient="records")]
    if isinstance(data, np.ndarray):
        if inputs is None:
            raise ValueError("a numpy array needs the model's inputs")
        return _array_records(data, inputs)
    if isinstance(data, Sequence) and not isinstance(data, str | bytes):
        rows = list(data)
        for i, row in enumerate(rows):
            if not isinstance(row, Mapping):
                raise TypeError(f"data[{i}]: expected a dict of feature values, got {type(row).__name__}")
        return [dict(row) for row in rows]
    raise TypeError(
        f"data: expected a dict, a list of dicts, a pandas DataFrame or a 2-D numpy array, got {type(data).__name__}"
    )


def _array_records(arr: np.ndarray, inputs: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    names = [str(spec["name"]) for spec in inputs]
    if len(inputs) == 1 and len(inputs[0].get("shape", [])) > 1:
        # a model without feature names: one input [-1, n_features]; each row of the array is one record
        return [{names[0]: row} for row in arr.tolist()]
    if arr.ndim != 2:
        raise ValueError(f"a numpy array must be 2-D (rows x features), got shape {list(arr.shape)}")
    if arr.shape[1] != len(names):
        raise ValueError(
            f"the array has {arr.shape[1]} columns but the model takes {len(names)} features, in this order: "
            + ", ".join(names)
        )
    return [dict(zip(names, row, strict=True)) for row in arr.tolist()]


def flat_row(answer: Mapping[str, Any]) -> dict[str, Any]:
    """One friendly answer -> flat columns (``probabilities.setosa``, ``embedding.0``)."""
    flat: dict[str, Any] = {}
    for key, value in answer.items():
        _flatten(flat, key, value)
    return flat


def _flatten(out: dict[str, Any], key: str, value: Any) -> None:
    if isinstance(value, Mapping):
        for label, item in value.items():
            _flatten(out, f"{key}.{label}", item)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _flatten(out, f"{key}.{i}", item)
    else:
        out[key] = value


def frame(answers: Sequence[Mapping[str, Any]], index: Any = None) -> pd.DataFrame:
    """Friendly answers -> a DataFrame (``index``: the input DataFrame's, so the two line up)."""
    import pandas as pd

    result = pd.DataFrame.from_records([flat_row(a) for a in answers])
    if index is not None and len(index) == len(result):
        result.index = index
    return result
