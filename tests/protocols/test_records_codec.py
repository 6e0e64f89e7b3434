"""The friendly records codec on its own: records in, friendly answers out, and every 400."""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson
import pytest

from modelapi import jsonutil
from modelapi.errors import InvalidInput, PayloadTooLarge
from modelapi.inference import InferenceResponse
from modelapi.protocols.records import codec as records
from modelapi.signature import Signature, TensorSpec
from toymodels import ECHO_TYPES, Echo, IrisClassifier, Regressor

IRIS = IrisClassifier.signature
ECHO = Echo.signature
REG = Regressor.signature
ROW = {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}


def echo_record(**changes: Any) -> dict[str, Any]:
    rec: dict[str, Any] = {t.lower(): 1 for t in ECHO_TYPES}
    rec.update(bool=True, fp64=1.5, bytes="x", matrix=[[1, 2, 3], [4, 5, 6]])
    rec.update(changes)
    return rec


def error(body: Any, signature: Signature = IRIS, **kw: Any) -> str:
    with pytest.raises(InvalidInput) as exc:
        records.decode(body, signature, **kw)
    return exc.value.detail


# decode ---------------------------------------------------------------------------------------------------
def test_single_record_is_one_row() -> None:
    request, single = records.decode(ROW, IRIS)
    assert single
    assert set(request.inputs) == set(ROW)
    assert request.inputs["sepal_length"].tolist() == [5.1]
    assert request.inputs["sepal_length"].dtype == np.float64


def test_list_of_records_is_many_rows() -> None:
    request, single = records.decode([ROW, {**ROW, "sepal_length": 7}], IRIS)
    assert not single
    assert request.inputs["sepal_length"].tolist() == [5.1, 7.0]
    IRIS.validate(request.inputs)


def test_every_datatype_and_a_matrix() -> None:
    request, _ = records.decode([echo_record(), echo_record(uint64=2**64 - 1, int8=-128)], ECHO)
    inputs = ECHO.validate(request.inputs)
    assert inputs["uint64"].tolist() == [1, 2**64 - 1]
    assert inputs["int8"].tolist() == [1, -128]
    assert inputs["matrix"].shape == (2, 2, 3)
    assert inputs["bytes"].tolist() == ["x", "x"]
    assert inputs["bool"].dtype == np.bool_


def test_integral_float_is_an_integer() -> None:
    request, _ = records.decode(echo_record(int32=3.0), ECHO)
    assert ECHO.validate(request.inputs)["int32"].tolist() == [3]


def test_null_for_a_model_that_takes_missing_values() -> None:
    request, _ = records.decode(echo_record(fp64=None), ECHO)
    assert np.isnan(request.inputs["fp64"][0])


@pytest.mark.parametrize("body", [[], "text", 3, None, True])
def test_body_must_be_a_record_or_a_non_empty_list(body: Any) -> None:
    detail = error(body)
    assert "expected one record" in detail
    assert "non-empty list of records" in detail


def test_record_in_a_list_must_be_an_object() -> None:
    assert error([ROW, [1, 2]]) == "record 1: expected an object of named fields, got an array of length 2"


def test_missing_and_unknown_fields_name_the_record() -> None:
    rows = [ROW, ROW, ROW, {k: v for k, v in ROW.items() if k != "petal_width"}]
    assert error(rows).startswith("record 3: missing 'petal_width'; expected fields: sepal_length")
    detail = error({**ROW, "colour": "red"})
    assert detail.startswith("record 0: unknown 'colour'")


@pytest.mark.parametrize(
    ("record", "expected"),
    [  # each as long as a good record (IRIS has four fields)
        (["a", "b", "c", "d"], "record 1: expected an object of named fields, got an array of length 4"),
        ("abcd", "record 1: expected an object of named fields, got string 'abcd'"),
        (4.5, "record 1: expected an object of named fields, got number 4.5"),
        ({**{k: 1 for k in list(ROW)[:3]}, "colour": 1}, "record 1: missing 'petal_width'; unknown 'colour'"),
        ({**ROW, "colour": 1}, "record 1: unknown 'colour'"),
    ],
)
def test_every_record_is_checked_whatever_its_length(record: Any, expected: str) -> None:
    assert error([ROW, record, {}]).startswith(expected)


def test_string_for_a_number_is_rejected() -> None:
    assert error({**ROW, "sepal_length": "abc"}) == "record 0: 'sepal_length' expected a number, got string 'abc'"
    assert "got string '5.1'" in error({**ROW, "sepal_length": "5.1"})


def test_boolean_is_not_a_number() -> None:
    assert error([ROW, {**ROW, "petal_length": True}]) == (
        "record 1: 'petal_length' expected a number, got boolean true"
    )


def test_null_for_a_model_that_needs_numbers() -> None:
    assert "'sepal_width' expected a number, got null" in error({**ROW, "sepal_width": None})


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"bool": 1}, "'bool' expected true or false, got number 1"),
        ({"int16": 1.5}, "'int16' expected an integer, got number 1.5"),
        ({"uint8": 256}, "'uint8' expected an integer in 0..255 (UINT8), got number 256"),
        ({"uint8": -1}, "'uint8' expected an integer in 0..255 (UINT8)"),
        ({"int64": -(2.0**63)}, "'int64' expected an integer in -9223372036854775808..9223372036854775807 (INT64)"),
        ({"bytes": 5}, "'bytes' expected a string, got number 5"),
        ({"matrix": [1, 2]}, "'matrix'[0] expected an array of shape [3] of numbers, got number 1"),
        ({"matrix": [[1, 2, 3]]}, "'matrix' expected an array of shape [2, 3] of numbers"),
        ({"matrix": [[1, 2, 3], [4, 5, "6"]]}, "'matrix'[1][2] expected a number, got string '6'"),
        ({"fp32": [1.0]}, "'fp32' expected a number or null, got an array of length 1"),
    ],
)
def test_wrong_types_name_the_field(changes: dict[str, Any], expected: str) -> None:
    detail = error([echo_record(), echo_record(**changes)], ECHO)
    assert detail.startswith("record 1: " + expected), detail


def test_too_many_records() -> None:
    with pytest.raises(PayloadTooLarge):
        records.decode([ROW] * 11, IRIS, max_rows=10)
    records.decode([ROW] * 10, IRIS, max_rows=10)


# encode ---------------------------------------------------------------------------------------------------
def iris_response(rows: int = 2) -> InferenceResponse:
    probs = np.array([[0.9, 0.05, 0.05], [0.1, 0.2, 0.7]])[:rows]
    labels = np.array(["setosa", "virginica"], dtype=object)[:rows]
    return InferenceResponse("iris", "1", {"label": labels, "probabilities": probs})


def test_classifier_answer_has_prediction_and_probabilities_by_label() -> None:
    one = records.encode(iris_response(1), IRIS, single=True)
    assert one == {"prediction": "setosa", "probabilities": {"setosa": 0.9, "versicolor": 0.05, "virginica": 0.05}}
    assert list(one) == ["prediction", "probabilities"]
    many = records.encode(iris_response(), IRIS, single=False)
    assert [p["prediction"] for p in many["predictions"]] == ["setosa", "virginica"]
    assert many["predictions"][1]["probabilities"]["virginica"] == 0.7


def test_nan_and_infinity_become_null_and_numpy_becomes_plain() -> None:
    out = {"prediction": np.array([np.nan, np.inf, 1.5], dtype=np.float32)}
    answer = records.encode(InferenceResponse("r", "1", out), REG, single=False)
    assert answer == {"predictions": [{"prediction": None}, {"prediction": None}, {"prediction": 1.5}]}
    assert type(answer["predictions"][2]["prediction"]) is float


def test_bytes_and_object_outputs_become_strings() -> None:
    sig = Signature((TensorSpec("x"),), (TensorSpec("text", "BYTES"),))
    out = {"text": np.array([b"caf\xc3\xa9", np.str_("b")], dtype=object)}
    assert records.encode(InferenceResponse("t", "1", out), sig, single=False)["predictions"] == [
        {"prediction": "café"},
        {"prediction": "b"},
    ]


def test_answer_keys_are_generic() -> None:
    # the first output is the prediction when there is no `label`; other outputs keep their names
    sig = Signature((TensorSpec("x"),), (TensorSpec("score"), TensorSpec("extra", shape=(-1, 2))))
    assert records.answer_keys(sig) == {"score": "prediction", "extra": "extra"}
    # an output already named `prediction` wins; `label` keeps its name
    sig = Signature((TensorSpec("x"),), (TensorSpec("label", "BYTES"), TensorSpec("prediction")))
    assert records.answer_keys(sig) == {"prediction": "prediction", "label": "label"}
    # a labelled output that is not called `probabilities` becomes `probabilities`
    sig = Signature(
        (TensorSpec("x"),),
        (TensorSpec("output_label", "INT64"), TensorSpec("output_probability", shape=(-1, 2), labels=(0, 1))),
    )
    assert records.answer_keys(sig) == {"output_label": "prediction", "output_probability": "probabilities"}
    out = {"output_label": np.array([1]), "output_probability": np.array([[0.25, 0.75]])}
    assert records.encode(InferenceResponse("m", "1", out), sig, single=True) == {
        "prediction": 1,
        "probabilities": {"0": 0.25, "1": 0.75},
    }


def test_other_outputs_keep_their_names() -> None:
    out = {
        k: np.asarray(v)
        for k, v in {
            "bool_out": [True],
            "int8_out": [np.int8(-3)],
            "matrix_out": np.zeros((1, 2, 3), np.float32),
        }.items()
    }
    answer = records.encode(InferenceResponse("echo", "1", out), ECHO, single=True)
    assert answer == {"prediction": True, "int8_out": -3, "matrix_out": [[0.0] * 3] * 2}


@pytest.mark.parametrize("n", [0, 1, 3, 64, 65, 200])
def test_row_dicts_key_each_row_like_dict_zip(n: int) -> None:
    keys = [f"k{i}" for i in range(n)]
    rows = [[r * 1000 + i for i in range(n)] for r in range(5)]
    assert records.row_dicts(keys, rows) == [dict(zip(keys, row, strict=True)) for row in rows]
    assert records.row_dicts(keys, iter(map(tuple, rows))) == [dict(zip(keys, row, strict=True)) for row in rows]


def _answers_agree(out: dict[str, np.ndarray], sig: Signature) -> bytes:
    """``encode_json`` gives the bytes of the row objects, for one row and for many."""
    response = InferenceResponse("m", "1", out)
    written = records.encode_json(response, sig, single=False)
    assert written == jsonutil.dumps(records.encode(response, sig, single=False))
    one = InferenceResponse("m", "1", {k: v[:1] for k, v in out.items()})
    assert records.encode_json(one, sig, single=True) == jsonutil.dumps(records.encode(one, sig, single=True))
    return written


@pytest.mark.parametrize("n", [1, 11, 12, 40])
def test_a_written_answer_is_the_row_objects_encoded(n: int) -> None:
    rng = np.random.default_rng(n)
    probs = rng.random((n, 3))
    probs[0, 1] = np.nan  # null
    probs[-1, 0] = 1e-5  # orjson writes 1e-5 (Python: 1e-05)
    probs[-1, 2] = 1e17
    labelled = Signature(
        (TensorSpec("x"),),
        (
            TensorSpec("output_label", "INT64"),
            TensorSpec("output_probability", shape=(-1, 3), labels=(0, 'a"b%s', "c\u2028")),
            TensorSpec("flag", "BOOL"),
            TensorSpec("score", "FP32"),
        ),
    )
    out = {
        "output_label": rng.integers(-5, 5, n),
        "output_probability": probs,
        "flag": rng.random(n) > 0.5,
        "score": rng.random(n).astype(np.float32),
    }
    written = _answers_agree(out, labelled)
    assert orjson.loads(written)["predictions"][0]["probabilities"]['a"b%s'] is None
    _answers_agree({"prediction": rng.random(n)}, REG)
    _answers_agree({"label": np.array(["setosa"] * n), "probabilities": rng.random((n, 3))}, IRIS)  # strings


@pytest.mark.parametrize(
    "out",
    [
        {"output_label": np.arange(20), "output_probability": np.zeros((20, 2))},  # labels for 3 positions, 2 sent
        {"output_label": np.arange(20), "output_probability": np.zeros((20, 3, 1))},
        {"output_label": np.arange(20), "output_probability": np.zeros(20)},
        {"output_label": np.arange(20), "output_probability": np.zeros((19, 3))},  # rows differ: zip stops
        {"output_label": np.matrix(np.arange(20)), "output_probability": np.zeros((20, 3))},
        {"output_label": np.arange(20).astype(object), "output_probability": np.zeros((20, 3))},
    ],
)
def test_an_answer_not_written_is_encoded_from_the_row_objects(out: dict[str, np.ndarray]) -> None:
    sig = Signature(
        (TensorSpec("x"),),
        (TensorSpec("output_label", "INT64"), TensorSpec("output_probability", shape=(-1, 3), labels=(0, 1, 2))),
    )
    response = InferenceResponse("m", "1", out)
    assert records.encode_json(response, sig, single=False) == jsonutil.dumps(
        records.encode(response, sig, single=False)
    )


@pytest.mark.parametrize("labels", [("a", "a", "b"), (1, "1", 2), (True, "True", 0)])
def test_labels_that_make_one_key_twice_are_encoded_from_the_row_objects(labels: tuple[Any, ...]) -> None:
    # the row object keeps one key (the last value); a written row would repeat the key
    sig = Signature(
        (TensorSpec("x"),),
        (TensorSpec("output_label", "INT64"), TensorSpec("output_probability", shape=(-1, 3), labels=labels)),
    )
    out = {"output_label": np.arange(20), "output_probability": np.tile([0.125, 0.25, 0.625], (20, 1))}
    written = _answers_agree(out, sig)
    assert written.count(b"0.125") == 0  # the first of the two values under one key is not written


def test_an_answer_of_no_outputs_is_encoded_from_the_row_objects() -> None:
    sig = Signature((TensorSpec("x"),), ())
    response = InferenceResponse("m", "1", {})
    assert records.encode_json(response, sig, single=False) == b'{"predictions":[]}'
