from __future__ import annotations

import hashlib
import json
import re
import textwrap
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pytest
import skops.io as sio
from sklearn.linear_model import LogisticRegression

from modelapi.errors import ModelLoadError, UntrustedModel
from modelapi.models.onnx import OnnxModel
from modelapi.models.registry import FORMATS, SUFFIXES, load_model
from modelapi.models.sklearn import SklearnModel
from modelapi.models.trust import Trust


@pytest.fixture
def fitted(arrays: Any) -> Any:
    X, y = arrays
    return LogisticRegression().fit(X, y)


def test_skops_file_named_by_its_stem(tmp_path: Path, fitted: Any) -> None:
    sio.dump(fitted, tmp_path / "churn-v2.skops")
    model = load_model(tmp_path / "churn-v2.skops")
    assert isinstance(model, SklearnModel)
    assert model.name == "churn-v2"
    assert model.info["source"] == str(tmp_path / "churn-v2.skops")
    assert load_model(str(tmp_path / "churn-v2.skops"), name="other").name == "other"


@pytest.mark.parametrize("suffix", [".joblib", ".pkl", ".pickle"])
def test_pickle_suffixes_need_trust(tmp_path: Path, fitted: Any, suffix: str) -> None:
    path = tmp_path / f"m{suffix}"
    joblib.dump(fitted, path)
    with pytest.raises(UntrustedModel):
        load_model(path)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    assert load_model(path, trust=Trust(sha256=frozenset({digest}))).name == "m"


def test_onnx_file(tmp_path: Path, arrays: Any) -> None:
    from skl2onnx import to_onnx

    X, y = arrays
    X32 = X.astype(np.float32)
    path = tmp_path / "net.onnx"
    path.write_bytes(to_onnx(LogisticRegression().fit(X32, y), X32[:1], target_opset=17).SerializeToString())
    model = load_model(path)
    assert isinstance(model, OnnxModel) and model.name == "net"


def test_directory_with_one_model_file_is_named_after_the_directory(tmp_path: Path, fitted: Any) -> None:
    folder = tmp_path / "churn"
    folder.mkdir()
    sio.dump(fitted, folder / "model.skops")
    (folder / "README.md").write_text("notes")
    model = load_model(folder)
    assert model.name == "churn"
    assert model.info["source"] == str(folder / "model.skops")


def test_directory_with_no_or_several_model_files(tmp_path: Path, fitted: Any) -> None:
    with pytest.raises(ModelLoadError, match=r"holds no model file; supported: \.skops"):
        load_model(tmp_path)
    sio.dump(fitted, tmp_path / "a.skops")
    sio.dump(fitted, tmp_path / "b.skops")
    with pytest.raises(ModelLoadError, match=r"several model files \(a.skops, b.skops\)"):
        load_model(tmp_path)


def test_unknown_suffix(tmp_path: Path) -> None:
    path = tmp_path / "model.h5"
    path.write_bytes(b"x")
    with pytest.raises(ModelLoadError) as info:
        load_model(path)
    msg = str(info.value)
    assert "unknown model format '.h5'" in msg
    assert all(s in msg for s in (".skops", ".onnx", ".joblib", ".pkl", ".pickle", "package.module:ClassName"))
    assert "\n" not in msg


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match=r"no such model file or directory: .*nope.skops; supported: .skops"):
        load_model(tmp_path / "nope.skops")
    with pytest.raises(ModelLoadError, match="no such model file"):
        load_model("nope.skops")  # a string that is neither a path nor module:Class


def test_the_list_of_supported_files_names_every_suffix_a_file_may_have() -> None:
    named = set(re.findall(r"\.[a-z0-9]+", FORMATS))
    assert set(SUFFIXES) <= named, f"not named: {sorted(set(SUFFIXES) - named)}"


@pytest.mark.parametrize("bad", ["my model", "-leading", "a/b", "x" * 129, "ünï"])
def test_bad_names_are_refused(tmp_path: Path, fitted: Any, bad: str) -> None:
    path = tmp_path / "ok.skops"
    sio.dump(fitted, path)
    with pytest.raises(ModelLoadError, match=r"cannot be used in URLs.*--name"):
        load_model(path, name=bad)


def test_bad_stem_asks_for_a_name(tmp_path: Path, fitted: Any) -> None:
    path = tmp_path / "my model.skops"
    sio.dump(fitted, path)
    with pytest.raises(ModelLoadError, match=r"'my model'.*choose one with --name"):
        load_model(path)
    assert load_model(path, name="mine").name == "mine"


def test_examples_sidecar(tmp_path: Path, fitted: Any) -> None:
    path = tmp_path / "m.skops"
    sio.dump(fitted, path)
    (tmp_path / "m.examples.json").write_text(json.dumps({"inputs": {"input": [0.1, 0.2, 0.3]}}))
    model = load_model(path)
    assert model.signature.input("input").example == [0.1, 0.2, 0.3]
    assert model.signature.example_record() == {"input": [0.1, 0.2, 0.3]}

    (tmp_path / "m.examples.json").write_text(json.dumps({"inputs": {"inptu": 1}}))
    with pytest.raises(ModelLoadError, match="unknown inputs inptu; the model's inputs: input"):
        load_model(path)
    (tmp_path / "m.examples.json").write_text("{not json")
    with pytest.raises(ModelLoadError, match="cannot read examples"):
        load_model(path)


def test_python_class_spec(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / "registry_user_mod.py").write_text(
        textwrap.dedent(
            """
            from modelapi.models.base import Model
            from modelapi.signature import Signature, TensorSpec

            class EchoModel(Model):
                signature = Signature.from_features({"x": "FP64"}, outputs=[TensorSpec("x")])

                def predict(self, inputs):
                    return dict(inputs)
            """
        )
    )
    model = load_model("registry_user_mod:EchoModel")
    assert model.name == "echomodel" and model.platform == "python"
    assert load_model("registry_user_mod:EchoModel", name="echo").name == "echo"
    (tmp_path / "registry_named_mod.py").write_text(
        "from registry_user_mod import EchoModel\n\nclass Named(EchoModel):\n    name = 'doubler'\n"
    )
    assert load_model("registry_named_mod:Named").name == "doubler"  # the class's own name beats the default
