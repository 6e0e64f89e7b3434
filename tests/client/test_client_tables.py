"""Rows in and out of ``predict`` without a server: the body sent for each data shape, the DataFrame built."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from modelapi.client.tables import flat_row, frame, records_of

FEATURES = [{"name": "a", "datatype": "FP64", "shape": [-1]}, {"name": "b", "datatype": "INT64", "shape": [-1]}]


def test_each_data_shape_becomes_records() -> None:
    assert records_of({"a": 1.0, "b": 2}) == {"a": 1.0, "b": 2}
    df = pd.DataFrame({"a": [1.5, np.nan], "b": [1, 2]})
    records = records_of(df)
    assert records[0] == {"a": 1.5, "b": 1} and np.isnan(records[1]["a"])  # NaN goes out as JSON null
    assert records_of(np.array([[1.0, 2.0]]), FEATURES) == [{"a": 1.0, "b": 2.0}]
    unnamed = [{"name": "input", "datatype": "FP32", "shape": [-1, 3]}]  # a model without feature names
    assert records_of(np.arange(6.0).reshape(2, 3), unnamed) == [{"input": [0.0, 1.0, 2.0]}, {"input": [3.0, 4.0, 5.0]}]
    with pytest.raises(ValueError, match="repeated column names"):
        records_of(pd.DataFrame([[1, 2]], columns=["a", "a"]))
    with pytest.raises(ValueError, match=r"must be 2-D \(rows x features\), got shape \[3\]"):
        records_of(np.ones(3), FEATURES)


def test_answers_flatten_as_job_results_do() -> None:
    answer = {"prediction": "b", "probabilities": {"a": 0.25, "b": 0.75}, "embedding": [[1, 2], [3, 4]]}
    assert flat_row(answer) == {
        "prediction": "b",
        "probabilities.a": 0.25,
        "probabilities.b": 0.75,
        "embedding.0.0": 1,
        "embedding.0.1": 2,
        "embedding.1.0": 3,
        "embedding.1.1": 4,
    }
    result = frame([{"prediction": 1.5}, {"prediction": None}], index=pd.Index(["x", "y"]))
    assert list(result.index) == ["x", "y"] and result["prediction"].iloc[0] == 1.5
