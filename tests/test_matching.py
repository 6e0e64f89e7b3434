"""Requests written for other servers, matched in the core (matching.py via Signature.validate): one tensor under
any name, one [N, n_features] tensor split per feature, and MLServer's output names. Every front end that builds
an InferenceRequest (V2 over REST or gRPC) gets these rules, so they are tested here without a wire format."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from modelapi.dataplane import DataPlane
from modelapi.errors import InvalidInput
from modelapi.inference import InferenceRequest
from modelapi.matching import output_aliases
from modelapi.settings import Settings
from modelapi.signature import Signature, TensorSpec
from toymodels import IrisClassifier

MIXED = Signature(
    (
        TensorSpec("age", "INT64"),
        TensorSpec("height", "FP32"),
        TensorSpec("weight", "FP64"),
    ),
    (TensorSpec("y"),),
)
STRINGS = Signature((TensorSpec("city", "BYTES"), TensorSpec("rooms", "INT32"), TensorSpec("area", "FP64")), ())
ONE = Signature((TensorSpec("input", "FP32", (-1, 4)),), (TensorSpec("y"),))


def rejection(signature: Signature, inputs: dict[str, object]) -> str:
    with pytest.raises(InvalidInput) as exc:
        signature.validate(inputs)  # type: ignore[arg-type]
    return exc.value.detail


def test_a_one_input_model_takes_one_tensor_under_any_name() -> None:
    out = ONE.validate({"predict": np.arange(8, dtype=np.int64).reshape(2, 4)})
    assert list(out) == ["input"] and out["input"].dtype == np.float32 and out["input"].shape == (2, 4)
    detail = rejection(ONE, {"input-0": np.zeros((2, 3))})
    assert detail.startswith("input 'input-0', taken as 'input': expected shape [-1, 4]")
    assert "this model takes 1 input: 'input' FP32 [-1, 4]" in detail


def test_a_feature_model_takes_one_matrix_a_column_per_feature_cast_per_feature() -> None:
    matrix = np.array([[30, 1.75, 70.5], [41, 1.6, 58.25]], dtype=np.float32)
    out = MIXED.validate({"input-0": matrix})
    assert list(out) == ["age", "height", "weight"]
    assert out["age"].dtype == np.int64 and out["age"].tolist() == [30, 41]
    assert out["height"].dtype == np.float32 and out["weight"].dtype == np.float64
    assert out["weight"].tolist() == [70.5, 58.25]
    assert all(a.flags.c_contiguous for a in out.values())
    ints = MIXED.validate({"x": np.array([[1, 2, 3]], dtype=np.int32)})
    assert ints["height"].tolist() == [2.0] and ints["age"].dtype == np.int64
    column = MIXED.validate({"x": np.array([[[1], [2], [3]]], dtype=np.float64)})  # [N, n, 1]
    assert column["weight"].tolist() == [3.0]


@pytest.mark.parametrize(
    ("tensor", "words"),
    [
        (np.zeros((2, 4)), ["input 'input-0': shape [2, 4] does not fit", "[N, 3]"]),
        (np.zeros(3), ["shape [3] does not fit"]),
        (np.array([[30.5, 1.7, 70.0]]), ["input 'input-0' column 0 ('age'): expected INT64 (integer)"]),
        (np.array([[True, False, True]]), ["column 0 ('age'): expected INT64 (integer), got boolean"]),
        (np.array([[30, np.nan, 70.0]]), ["column 1 ('height'): non-finite value"]),
    ],
)
def test_a_matrix_that_does_not_fit_is_refused_naming_the_expected_inputs(tensor: np.ndarray, words: list[str]) -> None:
    detail = rejection(MIXED, {"input-0": tensor})
    for word in words:
        assert word in detail
    assert "this model takes 3 inputs: 'age' INT64 [-1], 'height' FP32 [-1], 'weight' FP64 [-1]" in detail
    assert "or one tensor of shape [N, 3] with a column per input in that order" in detail


def test_a_bytes_matrix_carries_string_features_and_numbers_as_text() -> None:
    table = np.array([["Paris", "3", "71.5"], [b"Lyon", "2", "1e2"]], dtype=object)
    out = STRINGS.validate({"predict": table})
    assert out["city"].tolist() == ["Paris", b"Lyon"]
    assert out["rooms"].dtype == np.int32 and out["rooms"].tolist() == [3, 2]
    assert out["area"].tolist() == [71.5, 100.0]
    bad = rejection(STRINGS, {"predict": np.array([["Paris", "three", "1"]], dtype=object)})
    assert bad.startswith("input 'predict' column 1 ('rooms'): expected a number written as text, got 'three' at row 0")
    assert "'city' BYTES [-1]" in bad
    assert "got 'nan'" in rejection(STRINGS, {"predict": np.array([["Paris", "1", "nan"]], dtype=object)})
    numbers = rejection(STRINGS, {"predict": np.zeros((1, 3))})
    assert numbers.startswith("input 'predict' column 0 ('city'): expected BYTES (string), got float64 numbers")


def test_names_that_match_nothing_keep_the_usual_message_with_the_expected_inputs() -> None:
    detail = rejection(MIXED, {"age": np.array([1]), "tall": np.array([1.0])})
    assert detail.startswith("inputs: missing 'height' (FP32 [-1]), 'weight' (FP64 [-1]); unknown 'tall'")
    assert "this model takes 3 inputs" in detail
    # one tensor named as one of the features is that feature, not a matrix
    assert rejection(MIXED, {"age": np.zeros((2, 3))}).startswith("inputs: missing 'height'")
    # two tensors for a one-input model are not guessed at
    assert "unknown 'a', 'b'" in rejection(ONE, {"a": np.zeros((1, 4)), "b": np.zeros((1, 4))})


def test_mlserver_output_names() -> None:
    assert output_aliases(IrisClassifier.signature) == {"predict": "label", "predict_proba": "probabilities"}
    own = Signature((TensorSpec("x"),), (TensorSpec("predict"), TensorSpec("score", "FP64", (-1, 2), labels=(0, 1))))
    assert output_aliases(own) == {"predict_proba": "score"}  # a model's own output names win
    plane = DataPlane.from_settings(Settings(job_workers=0), models=[IrisClassifier()])
    rows = np.array([[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]])

    async def ask(outputs: list[str]) -> dict[str, np.ndarray]:
        await plane.start()
        try:
            return (await plane.infer("iris", InferenceRequest({"input-0": rows}, outputs=outputs))).outputs
        finally:
            await plane.close()

    answer = asyncio.run(ask(["predict_proba", "predict"]))
    assert list(answer) == ["predict_proba", "predict"]
    assert answer["predict"].tolist() == ["setosa", "virginica"]
    assert answer["predict_proba"].shape == (2, 3)
    with pytest.raises(InvalidInput, match="outputs: unknown 'transform'; model 'iris' has outputs: label"):
        asyncio.run(ask(["transform"]))
