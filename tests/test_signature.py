"""Signature.validate: the fast path for inputs that already have the declared dtype, and its fallbacks."""

from __future__ import annotations

import numpy as np
import pytest

from modelapi.errors import InvalidInput
from modelapi.signature import Signature, TensorSpec

WIDE = Signature.from_features({f"f{i}": "FP64" for i in range(20)}, outputs=[TensorSpec("y")])


def wide(rows: int = 1) -> dict[str, np.ndarray]:
    return {f"f{i}": np.full(rows, float(i)) for i in range(20)}


def test_inputs_with_the_declared_dtype_pass_through_unchanged() -> None:
    inputs = wide()
    out = WIDE.validate(inputs)
    assert all(out[k] is inputs[k] for k in inputs)


@pytest.mark.parametrize("rows", [1, 3, 100])  # few elements in all, and many (the two finiteness checks)
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_a_non_finite_value_is_found_and_named(rows: int, bad: float) -> None:
    inputs = wide(rows)
    inputs["f13"][rows - 1] = bad
    with pytest.raises(InvalidInput, match=rf"input 'f13': non-finite value .* at index \[{rows - 1}\]"):
        WIDE.validate(inputs)


MATRIX = Signature((TensorSpec("input", "FP64", (-1, 20)),), ())


@pytest.mark.parametrize("rows", [1, 3, 100])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_a_non_finite_value_in_one_matrix_input_is_found_and_named(rows: int, bad: float) -> None:
    arr = np.ones((rows, 20))
    arr[rows - 1, 7] = bad
    with pytest.raises(InvalidInput, match=rf"input 'input': non-finite value .* at index \[{rows - 1}, 7\]"):
        MATRIX.validate({"input": arr})


def test_finite_values_whose_sum_overflows_are_finite() -> None:
    arr = np.full((2, 20), 1e308)
    arr[1] = -1e308  # and the other way, a sum that overflows to -inf first
    assert MATRIX.validate({"input": arr})["input"] is arr
    assert MATRIX.validate({"input": -arr})["input"].shape == (2, 20)


@pytest.mark.parametrize("shape", [(2, 19), (2, 21), (20,), (1, 20, 1, 1)])
def test_a_matrix_input_of_another_width_is_refused(shape: tuple[int, ...]) -> None:
    with pytest.raises(InvalidInput, match=r"input 'input': expected shape \[-1, 20\]"):
        MATRIX.validate({"input": np.zeros(shape)})


def test_allow_nonfinite_still_lets_nan_through() -> None:
    sig = Signature((TensorSpec("a", allow_nonfinite=True), TensorSpec("b")), ())
    out = sig.validate({"a": np.array([np.nan]), "b": np.array([1.0])})
    assert np.isnan(out["a"][0])
    with pytest.raises(InvalidInput, match="'b': non-finite"):
        sig.validate({"a": np.array([np.nan]), "b": np.array([np.nan])})


def test_fixed_dimensions_are_checked_on_the_fast_path_too() -> None:
    sig = Signature((TensorSpec("m", "FP32", (-1, 2, 3)),), ())
    assert sig.validate({"m": np.zeros((4, 2, 3), np.float32)})["m"].shape == (4, 2, 3)
    with pytest.raises(InvalidInput, match=r"expected shape \[-1, 2, 3\]"):
        sig.validate({"m": np.zeros((4, 3, 2), np.float32)})


def test_other_dtypes_and_shapes_take_the_checked_path() -> None:
    sig = Signature((TensorSpec("x", "FP32"), TensorSpec("n", "INT8"), TensorSpec("s", "BYTES")), ())
    out = sig.validate({"x": np.array([[1.0], [2.0]]), "n": np.array([1, 2]), "s": np.array(["a", "b"], dtype=object)})
    assert out["x"].dtype == np.float32 and out["x"].shape == (2,) and out["n"].dtype == np.int8
    with pytest.raises(InvalidInput, match="'n': value out of range for INT8"):
        sig.validate({"x": np.array([1.0]), "n": np.array([300]), "s": np.array(["a"], dtype=object)})
    with pytest.raises(InvalidInput, match="'s': expected BYTES"):
        sig.validate({"x": np.array([1.0]), "n": np.array([1], np.int8), "s": np.array([3], dtype=object)})
    with pytest.raises(InvalidInput, match="'x': expected FP32"):
        sig.validate({"x": [None, "a"], "n": np.array([1, 2], np.int8), "s": np.array(["a", "b"], dtype=object)})
