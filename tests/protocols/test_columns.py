"""The fast path from JSON values to a column: taken only when nothing needs a per-element message."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from modelapi.protocols.columns import fast_column, numbers
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
        (TensorSpec("x", "FP64", (-1, 3)), [[0.5, 2.0, 0.0], [1.0, 0.0, True]]),  # a boolean among 0s and 1s
        (TensorSpec("x", "INT64"), [0, 1, 2, False]),
        (TensorSpec("x", "INT64", (-1, 2)), [[2, 3], [1, 1]] * 20 + [[1, True]]),
    ],
)
def test_anything_else_takes_the_checked_path(spec: TensorSpec, values: list[Any]) -> None:
    assert fast_column(spec, values) is None


def test_numbers_looks_only_at_elements_that_are_0_or_1() -> None:
    """numpy reads a boolean among numbers as 0 or 1: those elements, and only those, are looked at."""
    rows = [[float(i), 0.5, 0.0] for i in range(2, 40)]
    arr = numbers(rows)
    assert arr is not None and arr.dtype == np.float64 and arr.shape == (38, 3)
    assert numbers([*rows, [2.0, 0.5, False]]) is None
    assert numbers([*rows, [2.0, 1, 0]]) is not None  # integers 0 and 1 are numbers
    many_ints = [i % 5 for i in range(40)]  # 0s and 1s among them
    assert numbers(many_ints) is not None and numbers([*many_ints, True]) is None
    ints = numbers([1, 2, 3])
    assert ints is not None and ints.dtype == np.int64
    flags = numbers([True, False])
    assert flags is not None and flags.dtype == np.bool_
    for other in ([1.0, None], [1.0, "2"], ["a"], [[1.0], [1.0, 2.0]], [1.0, {}], [2**70, 1.0]):
        assert numbers(other) is None


@pytest.mark.parametrize("size", [2, 3, 20, 32, 33, 64])
def test_a_boolean_anywhere_among_few_or_many_numbers_is_found(size: int) -> None:
    """Up to a few dozen elements every element's type is read, past that only the 0s and 1s: either way a boolean
    among numbers is found wherever it is, in a flat list or in rows."""
    flat = [0.25 * (i + 3) for i in range(size)]
    assert numbers(flat) is not None
    for i in range(size):
        for flag in (True, False):
            assert numbers([*flat[:i], flag, *flat[i + 1 :]]) is None, (size, i, flag)
    rows = [flat[j : j + 2] for j in range(0, size - size % 2, 2)]
    if rows:
        assert numbers(rows) is not None
        rows[-1] = [rows[-1][0], True]
        assert numbers(rows) is None
