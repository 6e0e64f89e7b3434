"""Query strings on their own: values parsed by datatype into one row, and every 400."""

from __future__ import annotations

import numpy as np
import pytest

from modelapi.errors import InvalidInput
from modelapi.protocols.records import query
from modelapi.signature import Signature, TensorSpec
from toymodels import Echo, Regressor

ECHO = Echo.signature
REG = Regressor.signature


def test_query_parses_numbers_by_datatype() -> None:
    items = [("a", "-1.5"), ("b", "1e-3")]
    request = query.decode_query(items, REG)
    assert request.inputs["a"].tolist() == [-1.5]
    assert request.inputs["b"].tolist() == [0.001]
    request = query.decode_query([("a", "+2"), ("b", ".5")], REG)
    assert request.inputs["a"].tolist() == [2.0]


@pytest.mark.parametrize("text", ["abc", "1,5", "0x10", "1_000", ""])
def test_query_rejects_what_is_not_a_number(text: str) -> None:
    with pytest.raises(InvalidInput, match="query parameter 'a' expected a number, got string"):
        query.decode_query([("a", text), ("b", "1")], REG)


@pytest.mark.parametrize("text", ["nan", "NaN", "inf", "-Infinity", "1e999"])
def test_query_says_a_finite_number_for_nan_and_infinity(text: str) -> None:
    with pytest.raises(InvalidInput, match=f"query parameter 'a' expected a finite number, got '{text}'"):
        query.decode_query([("a", text), ("b", "1")], REG)


def test_query_booleans_strings_and_integers() -> None:
    sig = Signature((TensorSpec("on", "BOOL"), TensorSpec("city", "BYTES"), TensorSpec("n", "INT8")), ())
    request = query.decode_query([("on", "true"), ("city", "Paris"), ("n", "-7")], sig)
    assert request.inputs["on"].tolist() == [True]
    assert request.inputs["city"].tolist() == ["Paris"]
    assert request.inputs["n"].tolist() == [-7]
    assert query.decode_query([("on", "False"), ("city", ""), ("n", "3")], sig).inputs["on"].tolist() == [False]
    with pytest.raises(InvalidInput, match="'on' expected true or false, got string 'yes'"):
        query.decode_query([("on", "yes"), ("city", "x"), ("n", "1")], sig)
    with pytest.raises(InvalidInput, match=r"'n' expected an integer in -128..127"):
        query.decode_query([("on", "true"), ("city", "x"), ("n", "300")], sig)
    with pytest.raises(InvalidInput, match=r"'n' expected an integer, got number 1\.5"):
        query.decode_query([("on", "true"), ("city", "x"), ("n", "1.5")], sig)


def test_query_nan_only_where_the_model_allows_it() -> None:
    sig = Signature((TensorSpec("x", "FP64", allow_nonfinite=True),), ())
    assert np.isnan(query.decode_query([("x", "")], sig).inputs["x"][0])
    assert np.isnan(query.decode_query([("x", "NaN")], sig).inputs["x"][0])


def test_query_missing_unknown_and_repeated() -> None:
    with pytest.raises(InvalidInput) as exc:
        query.decode_query([("a", "1"), ("c", "2")], REG)
    assert exc.value.detail.startswith("query string: missing 'b'; unknown 'c'; expected parameters: a, b")
    assert "example: ?a=0.0&b=0.0" in exc.value.detail
    with pytest.raises(InvalidInput, match="'a' given more than once"):
        query.decode_query([("a", "1"), ("a", "2"), ("b", "2")], REG)


def test_query_refuses_array_inputs() -> None:
    with pytest.raises(InvalidInput, match=r"GET only supports scalar features.*'matrix' has shape \[-1, 2, 3\]"):
        query.decode_query([], ECHO)
