"""The KServe V1 / TensorFlow Serving codec on its own: instances and columnar inputs, answers, every 400."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from modelapi.errors import InvalidInput, PayloadTooLarge
from modelapi.inference import InferenceResponse
from modelapi.protocols.v1 import codec as v1
from modelapi.signature import Signature, TensorSpec
from toymodels import Echo, IrisClassifier, Regressor

IRIS = IrisClassifier.signature
REG = Regressor.signature
ROW = {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}
UNNAMED = Signature((TensorSpec("input", "FP32", (-1, 4)),), (TensorSpec("label", "INT64"),))


def error(body: Any, signature: Signature = IRIS, **kw: Any) -> str:
    with pytest.raises(InvalidInput) as exc:
        v1.decode(body, signature, **kw)
    return exc.value.detail


def test_instances_as_objects_and_as_feature_lists() -> None:
    decoded = v1.decode({"instances": [ROW, [6.3, 3.3, 6.0, 2.5]]}, IRIS)
    assert not decoded.columnar
    assert decoded.request.outputs is None
    assert decoded.request.inputs["sepal_length"].tolist() == [5.1, 6.3]
    assert decoded.request.inputs["petal_width"].tolist() == [0.2, 2.5]


def test_single_input_model_takes_the_row_value() -> None:
    decoded = v1.decode({"instances": [[1, 2, 3, 4], [5, 6, 7, 8]]}, UNNAMED)
    assert UNNAMED.validate(decoded.request.inputs)["input"].shape == (2, 4)
    one_column = Signature((TensorSpec("x"),), (TensorSpec("y"),))
    assert v1.decode({"instances": [1.5, 2]}, one_column).request.inputs["x"].tolist() == [1.5, 2.0]
    assert v1.decode({"instances": [[1.5], {"x": 2}]}, one_column).request.inputs["x"].tolist() == [1.5, 2.0]


def test_columnar_inputs() -> None:
    decoded = v1.decode({"inputs": {"a": [1, 2], "b": [3, 4]}}, REG)
    assert decoded.columnar
    assert decoded.request.inputs["b"].tolist() == [3.0, 4.0]
    assert v1.decode({"inputs": [[1, 2, 3, 4]]}, UNNAMED).request.inputs["input"].shape == (1, 4)


def test_kserve_reads_inputs_as_instances() -> None:
    """KServe's V1 server reads a list under "inputs" as it reads "instances", and answers "predictions"."""
    decoded = v1.decode({"inputs": [[5.1, 3.5, 1.4, 0.2], ROW]}, IRIS)
    assert not decoded.columnar
    assert decoded.request.inputs["sepal_length"].tolist() == [5.1, 5.1]
    assert v1.encode(iris_answer(), IRIS, decoded) == {"predictions": ["setosa", "virginica"]}
    single = v1.decode({"inputs": [[1, 2, 3, 4]]}, UNNAMED)  # one input: TensorFlow Serving's columnar list
    assert single.columnar and single.request.inputs["input"].shape == (1, 4)


def test_blocks_of_rows_as_pandas_writes_them() -> None:
    """An item may hold several rows: name -> list of values, name -> {row index: value}, or a list of records."""
    lists = {
        "sepal_length": [5.1, 6.3],
        "sepal_width": [3.5, 3.3],
        "petal_length": [1.4, 6.0],
        "petal_width": [0.2, 2.5],
    }
    indexed = {k: {"7": v[1], "3": v[0]} for k, v in lists.items()}
    for body in (
        {"inputs": [lists]},
        {"instances": [lists]},
        {"instances": [indexed]},
        {"instances": [[ROW, {k: v[1] for k, v in lists.items()}]]},
    ):
        decoded = v1.decode(body, IRIS)
        assert decoded.request.inputs["sepal_length"].tolist() in ([5.1, 6.3], [6.3, 5.1]), body
        assert decoded.request.inputs["petal_width"].tolist() in ([0.2, 2.5], [2.5, 0.2]), body
    assert v1.decode({"instances": [ROW, lists]}, IRIS).request.inputs["sepal_width"].tolist() == [3.5, 3.5, 3.3]
    with pytest.raises(PayloadTooLarge):
        v1.decode({"instances": [lists]}, IRIS, max_rows=1)
    # a model with an array input keeps reading a list value as that input's row
    assert v1.decode({"instances": [{"input": [1, 2, 3, 4]}]}, UNNAMED).request.inputs["input"].shape == (1, 4)


def test_signature_name_is_accepted() -> None:
    decoded = v1.decode({"signature_name": "serving_default", "instances": [ROW]}, IRIS)
    assert decoded.request.inputs["sepal_length"].tolist() == [5.1]


def test_outputs_option() -> None:
    decoded = v1.decode({"instances": [ROW], "outputs": ["probabilities", "label"]}, IRIS)
    assert decoded.request.outputs == ["probabilities", "label"]
    assert "expected a non-empty list of output names" in error({"instances": [ROW], "outputs": "label"})


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ([ROW], 'expected a JSON object with "instances"'),
        ({"instances": []}, '"instances" expected a non-empty list, one item per row; got an empty list'),
        ({"instances": ROW}, '"instances" expected a non-empty list'),
        ({}, 'neither of "instances" and "inputs"'),
        ({"instances": [ROW], "inputs": {}}, 'both of "instances" and "inputs"'),
        ({"instances": [ROW], "extra": 1}, "unknown field 'extra'"),
        ({"instances": [ROW], "parameters": [None]}, '"parameters" expected an object, got an array of length 1'),
        ({"instances": [ROW], "signature_name": 1}, '"signature_name" expected a string, got number 1'),
        ({"instances": [ROW, [1, 2, 3]]}, "instance 1: expected 4 feature values in this order: sepal_length"),
        ({"instances": [ROW, ROW, {"sepal_length": 1}]}, "instance 2: missing 'sepal_width', 'petal_length'"),
        ({"instances": [ROW, "x"]}, "instance 1: expected a list of feature values in signature order or an object"),
        (
            {"instances": [ROW, {**ROW, "petal_width": "0.2"}]},
            "instance 1: 'petal_width' expected a number, got string '0.2'",
        ),
        ({"instances": [[5.1, 3.5, True, 0.2]]}, "instance 0: 'petal_length' expected a number, got boolean true"),
        ({"inputs": {"sepal_length": [1]}}, "\"inputs\": missing 'sepal_width'"),
        ({"inputs": [ROW, [1, 2, 3]]}, "instance 1: expected 4 feature values in this order: sepal_length"),
        ({"inputs": []}, '"inputs" expected a non-empty list, one item per row; got an empty list'),
        (
            {"inputs": [{**{k: [v] for k, v in ROW.items()}, "petal_width": [1, 2]}]},
            "'petal_width' expected a list of 1",
        ),
        ({"inputs": [{k: {"0": v} for k, v in ROW.items()} | {"sepal_width": {"1": 3}}]}, "row indexes of"),
        ({"instances": [[ROW, 5]]}, "instance 0: item 1 expected an object of named inputs, got number 5"),
        ({"instances": [[ROW, {"sepal_length": 1}]]}, "instance 0 item 1: missing 'sepal_width'"),
    ],
)
def test_errors_name_the_instance(body: Any, expected: str) -> None:
    assert expected in error(body)


def test_columnar_errors() -> None:
    assert "input 'b': has 1 rows but 'a' has 2" in error({"inputs": {"a": [1, 2], "b": [3]}}, REG)
    assert "row 1: 'b' expected a number, got string 'x'" in error({"inputs": {"a": [1, 2], "b": [3, "x"]}}, REG)
    assert "input 'a': expected a non-empty list of rows, got an empty list" in error(
        {"inputs": {"a": [], "b": []}}, REG
    )
    assert "'input' expected an array of shape [4] of numbers" in error({"instances": [[1, 2, 3]]}, UNNAMED)


def test_row_limit() -> None:
    with pytest.raises(PayloadTooLarge):
        v1.decode({"instances": [ROW] * 3}, IRIS, max_rows=2)
    with pytest.raises(PayloadTooLarge):
        v1.decode({"inputs": {"a": [1, 2, 3], "b": [1, 2, 3]}}, REG, max_rows=2)


def iris_answer() -> InferenceResponse:
    return InferenceResponse(
        "iris",
        "1",
        {
            "label": np.array(["setosa", "virginica"], dtype=object),
            "probabilities": np.array([[0.9, 0.05, 0.05], [0.1, 0.2, 0.7]]),
        },
    )


def test_classifier_predictions_are_labels() -> None:
    decoded = v1.decode({"instances": [ROW, ROW]}, IRIS)
    assert v1.encode(iris_answer(), IRIS, decoded) == {"predictions": ["setosa", "virginica"]}


def test_outputs_option_answers_objects_per_row() -> None:
    decoded = v1.decode({"instances": [ROW, ROW], "outputs": ["label", "probabilities"]}, IRIS)
    answer = v1.encode(iris_answer(), IRIS, decoded)
    assert answer["predictions"][1] == {"label": "virginica", "probabilities": [0.1, 0.2, 0.7]}


def test_columnar_answer_is_outputs() -> None:
    decoded = v1.decode({"inputs": {**{k: [v, v] for k, v in ROW.items()}}}, IRIS)
    assert v1.encode(iris_answer(), IRIS, decoded) == {"outputs": ["setosa", "virginica"]}
    decoded = v1.decode({"inputs": {k: [v, v] for k, v in ROW.items()}, "outputs": ["label"]}, IRIS)
    assert v1.encode(iris_answer(), IRIS, decoded) == {"outputs": {"label": ["setosa", "virginica"]}}


def test_nan_becomes_null() -> None:
    decoded = v1.decode({"instances": [[1, 2], [999, 1]]}, REG)
    answer = InferenceResponse("regressor", "1", {"prediction": np.array([0.0, np.nan])})
    assert v1.encode(answer, REG, decoded) == {"predictions": [0.0, None]}


def test_echo_matrix_instances_need_objects() -> None:
    detail = error({"instances": [[1, 2]]}, Echo.signature)
    assert detail.startswith("instance 0: expected an object of named inputs (bool, uint8")
