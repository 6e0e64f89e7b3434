from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import skops.io as sio
from sklearn.datasets import load_iris

from modelapi.demo import DEMO_MODEL_PATH
from modelapi.demo.train import FEATURES, main
from modelapi.models.registry import load_model
from modelapi.models.sklearn import EXTRA_TRUSTED_TYPES


def test_bundled_model_holds_only_trusted_types() -> None:
    assert DEMO_MODEL_PATH.is_file()
    assert set(sio.get_untrusted_types(file=DEMO_MODEL_PATH)) <= EXTRA_TRUSTED_TYPES


def test_demo_model_signature_and_examples() -> None:
    model = load_model(DEMO_MODEL_PATH)
    assert model.name == "iris"
    assert model.signature.input_names == FEATURES
    assert model.signature.example_record() == {
        "sepal_length": 5.1,
        "sepal_width": 3.5,
        "petal_length": 1.4,
        "petal_width": 0.2,
    }
    proba = model.signature.output("probabilities")
    assert proba is not None and proba.labels == ("setosa", "versicolor", "virginica")


def test_demo_model_predicts_setosa_for_the_first_row() -> None:
    model = load_model(DEMO_MODEL_PATH)
    inputs = model.signature.validate({k: np.array([v]) for k, v in model.signature.example_record().items()})
    out = model.predict(inputs)
    assert out["label"].tolist() == ["setosa"]
    assert out["probabilities"][0].argmax() == 0


def test_training_is_reproducible(tmp_path: Path) -> None:
    out = tmp_path / "again.skops"
    assert main([str(out)]) == 0
    assert json.loads((tmp_path / "again.examples.json").read_text()) == json.loads(
        DEMO_MODEL_PATH.with_name("iris.examples.json").read_text()
    )
    X = load_iris().data
    inputs = {name: X[:, i] for i, name in enumerate(FEATURES)}
    bundled, retrained = load_model(DEMO_MODEL_PATH).predict(inputs), load_model(out).predict(inputs)
    np.testing.assert_array_equal(bundled["label"], retrained["label"])
    # the same data and seed give the same fit; the last bits of the solver's floating point depend on the
    # CPU's BLAS kernel (seen: 1e-16 apart between two x86-64 machines), so probabilities agree to 1e-9 relative
    np.testing.assert_allclose(bundled["probabilities"], retrained["probabilities"], rtol=1e-9, atol=1e-12)
