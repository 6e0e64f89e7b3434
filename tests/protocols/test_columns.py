"""The fast path from JSON values to a column: taken only when nothing needs a per-element message."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from modelapi.protocols.columns import fast_column
from modelapi.signature import TensorSpec


@pytest.mark.parametrize(
    ("spec", "values", "expected"),
    [
        (TensorSpec("x", "FP64"), [1.5, 2, -3.0], np.array([1.5, 2.0, -3.0])),
        (TensorSpec("x", "FP32", (-1, 2)), [[1, 2.5], [3, 4]], np.array([[1, 2.5], [3, 4]])),
        (TensorSpec("x", "INT8"), [1, -2], np.array([1, -2], np.int8)),
        (TensorSpec("x", "BOOL"), [True, False], np.array([True, False])),
        (TensorSpec("x", "BYTES"), ["a", "b"], np.array(["a", "b"], dtype=object)),
        (TensorSpec("x", "FP64", (-1, -1)), [[1.0, 2.0], [3.0, 4.0]], np.array([[1.0, 2.0], [3.0, 4.0]])),
    ],
)
def test_clean_values_become_a_column_in_one_step(spec: TensorSpec, values: list[Any], expected: np.ndarray) -> None:
    arr = fast_column(spec, values)
    assert arr is not None and arr.dtype == (np.float64 if expected.dtype.kind == "f" else expected.dtype)
    assert arr.tolist() == expected.tolist()


@pytest.mark.parametrize(
    ("spec", "values"),
    [
        (TensorSpec("x", "FP64"), [1.0, True]),  # a boolean is not a number here
        (TensorSpec("x", "FP64"), [1.0, "2"]),  # nor a string that looks like one
        (TensorSpec("x", "FP64"), [1.0, None]),
        (TensorSpec("x", "FP64", (-1, 2)), [[1.0, 2.0], [3.0]]),  # ragged
        (TensorSpec("x", "FP64", (-1, 2)), [[1.0, 2.0, 3.0], [3.0, 4.0, 5.0]]),  # wrong width
        (TensorSpec("x", "FP64", (-1, 2)), [[1.0, 2.0], 3.0]),
        (TensorSpec("x", "FP64", (-1, 2)), [[1.0, [2.0]], [3.0, 4.0]]),
        (TensorSpec("x", "FP32", (-1, 2, 3)), [[[0.0] * 3] * 2]),  # deeper rows take the checked path
        (TensorSpec("x", "INT8"), [1, 300]),  # out of range
        (TensorSpec("x", "INT64"), [1, 2.0]),
        (TensorSpec("x", "BOOL"), [True, 1]),
        (TensorSpec("x", "BYTES"), ["a", 1]),
    ],
)
def test_anything_else_takes_the_checked_path(spec: TensorSpec, values: list[Any]) -> None:
    assert fast_column(spec, values) is None
