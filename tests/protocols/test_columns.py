"""The fast path from JSON values to a column: taken only when nothing needs a per-element message."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from modelapi.protocols.columns import fast_column, floats, numbers
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


def _as_numbers(values: list[Any]) -> np.ndarray | None:
    """What ``numbers`` gives when it is a float64 array; else ``None`` (``floats`` leaves those to it)."""
    arr = numbers(values)
    return arr if arr is not None and arr.dtype == np.float64 else None


@pytest.mark.parametrize("size", [33, 40, 200])
def test_floats_is_numbers_for_many_floats_and_leaves_anything_else(size: int) -> None:
    flat = [0.37 * (i - 7) for i in range(size)]
    flat[3] = 2.0  # an integral float is still a float
    flat[4] = -0.0
    changed: list[list[Any]] = [flat]
    for i in (0, 5, size - 1):
        for other in (1, 0, True, False, 2**63, 2**70, 10**400, None, "1.5", [1.0], {}):
            changed.append([*flat[:i], other, *flat[i + 1 :]])
    for values in changed:
        arr, expected = floats(values), _as_numbers(values)
        if arr is None:
            assert values is not flat
        else:
            assert expected is not None and arr.dtype == np.float64 and arr.flags.writeable
            assert arr.shape == expected.shape and arr.tobytes() == expected.tobytes()
        # as rows of two (an odd size's last element left out)
        rows = [values[j : j + 2] for j in range(0, size - size % 2, 2)]
        arr, expected = floats(rows, 2), _as_numbers(rows)
        if arr is not None:
            assert expected is not None and arr.shape == expected.shape and arr.tobytes() == expected.tobytes()
        else:
            assert values is not flat or size % 2
    assert floats(flat[:32]) is None  # a few: for numbers


@pytest.mark.parametrize(
    "rows",
    [
        [[1.5, 2.5]] * 19 + [[1.5]],  # ragged
        [[1.5, 2.5]] * 19 + [[1.5, 2.5, 3.5]],
        [[1.5, 2.5]] * 19 + ["ab"],  # a string of the width
        [[1.5, 2.5]] * 19 + [{"a": 1.0, "b": 2.0}],  # an object of the width
        [[1.5, 2.5]] * 19 + [1.5],
        [[1.5, 2.5]] * 19 + [[[1.5], [2.5]]],
        [[1.5, 2.5]] * 19 + [[1.5, True]],
        [[1.5, 2.5]] * 19 + [[1.5, 2]],  # numbers would take it (as float64): floats leaves it to it
    ],
)
def test_floats_leaves_rows_that_are_not_all_floats_of_the_width(rows: list[Any]) -> None:
    assert floats(rows, 2) is None
    assert floats([[1.5, 2.5]] * 20, 2) is not None
    spec = TensorSpec("x", "FP64", (-1, 2))
    expected = numbers(rows)
    arr = fast_column(spec, rows)
    assert (arr is None) == (expected is None or expected.ndim != 2 or expected.dtype.kind not in "fi")
