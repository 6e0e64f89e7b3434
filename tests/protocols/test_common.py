"""The one description of a JSON value that every codec's error messages use."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from modelapi.errors import InvalidInput
from modelapi.protocols.common import describe, to_plain
from modelapi.protocols.mlflow import codec as mlflow
from modelapi.protocols.records import codec as records
from modelapi.protocols.v2 import json as v2_json
from modelapi.signature import Signature, TensorSpec


@pytest.mark.parametrize(
    ("value", "words", "definite"),
    [
        (None, "null", "null"),
        (True, "boolean true", "the boolean true"),
        (False, "boolean false", "the boolean false"),
        ("abc", "string 'abc'", "the string 'abc'"),
        ("x" * 100, f"string {'x' * 40!r}", f"the string {'x' * 40!r}"),
        (1.5, "number 1.5", "the number 1.5"),
        (10**80, f"number {10**80}"[:50], "the " + f"number {10**80}"[:50]),
        ([1, 2], "an array of length 2", "an array of length 2"),
        ({"a": 1}, "an object", "an object"),
    ],
)
def test_describe(value: Any, words: str, definite: str) -> None:
    assert describe(value) == words
    assert describe(value, definite=True) == definite


def test_every_codec_uses_it() -> None:
    with pytest.raises(InvalidInput, match="needs numbers or null, got the boolean true at element 1"):
        v2_json.decode_tensor([1.0, True], "FP64", [2], "input 'a'")
    sig = Signature((TensorSpec("a", "FP64"),), (TensorSpec("y", "FP64"),))
    with pytest.raises(InvalidInput, match="'a' expected a number, got boolean true"):
        records.decode({"a": True}, sig)
    with pytest.raises(InvalidInput, match="got boolean true"):
        mlflow.decode(True, sig)


@pytest.mark.parametrize("shape", [(3,), (1, 3), (2, 5), (8, 8), (9, 8), (100,), (2, 2, 2)])
def test_to_plain_answers_non_finite_floats_as_null_small_or_large(shape: tuple[int, ...]) -> None:
    """A few values are checked on their list, more by numpy: either way NaN and the infinities become null."""
    arr = np.arange(np.prod(shape), dtype=np.float64).reshape(shape) / 4
    assert to_plain(arr) == arr.tolist()
    for bad in (np.nan, np.inf, -np.inf):
        for at in (0, arr.size - 1):
            marked = arr.copy()
            marked.flat[at] = bad
            expected = marked.astype(object)
            expected.flat[at] = None
            assert to_plain(marked) == expected.tolist(), (shape, bad, at)
    assert to_plain(np.float32([0.5, 1.5])) == [0.5, 1.5]
    assert to_plain(np.array(2.5)) == 2.5
    assert to_plain(np.array(np.nan)) is None
