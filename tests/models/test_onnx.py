from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper
from skl2onnx import to_onnx
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression

from modelapi.errors import ModelLoadError
from modelapi.models.onnx import load_onnx


@pytest.fixture
def iris_like() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.RandomState(0)
    X = rng.normal(size=(30, 4)).astype(np.float32)
    y = np.array(["cat", "dog", "emu"], dtype=object)[np.argmax(X[:, :3], axis=1)]
    return X, y


def save(proto: Any, path: Path) -> Path:
    onnx.save_model(proto, str(path))
    return path


def session_outputs(path: Path, X: np.ndarray) -> list[Any]:
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    result: list[Any] = sess.run(None, {"X": X})
    return result


def test_classifier_without_zipmap(tmp_path: Path, iris_like: Any) -> None:
    X, y = iris_like
    proto = to_onnx(LogisticRegression().fit(X, y), X[:1], options={"zipmap": False}, target_opset=17)
    path = save(proto, tmp_path / "clf.onnx")
    model = load_onnx(path)
    sig = model.signature
    assert [(s.name, s.datatype, s.shape) for s in sig.inputs] == [("X", "FP32", (-1, 4))]
    assert [(s.name, s.datatype, s.shape, s.labels) for s in sig.outputs] == [
        ("label", "BYTES", (-1,), None),
        ("probabilities", "FP32", (-1, 3), ("cat", "dog", "emu")),
    ]
    assert model.platform == "onnx" and model.info["producer"].startswith("skl2onnx")
    out = model.predict(sig.validate({"X": X[:6].astype(np.float64)}))
    label, proba = session_outputs(path, X[:6])
    np.testing.assert_array_equal(out["label"], label)
    np.testing.assert_array_equal(out["probabilities"], proba)


def test_zipmap_output_becomes_a_labelled_array(tmp_path: Path, iris_like: Any) -> None:
    X, y = iris_like
    path = save(to_onnx(LogisticRegression().fit(X, y), X[:1], target_opset=17), tmp_path / "zip.onnx")
    model = load_onnx(path)
    spec = model.signature.output("output_probability")
    assert spec is not None
    assert (spec.datatype, spec.shape, spec.labels) == ("FP64", (-1, 3), ("cat", "dog", "emu"))
    out = model.predict({"X": X[:5]})
    label, dicts = session_outputs(path, X[:5])
    expected = np.array([[d[k] for k in ("cat", "dog", "emu")] for d in dicts])
    np.testing.assert_array_equal(out["output_probability"], expected)
    np.testing.assert_array_equal(out["output_label"], label)


def test_integer_class_labels_from_a_tree_ensemble(tmp_path: Path, iris_like: Any) -> None:
    X, _ = iris_like
    y = np.argmax(X[:, :3], axis=1) * 10
    rf = RandomForestClassifier(n_estimators=3, random_state=0).fit(X, y)
    path = save(to_onnx(rf, X[:1], options={"zipmap": False}, target_opset=17), tmp_path / "rf.onnx")
    model = load_onnx(path)
    assert model.signature.output("label").datatype == "INT64"  # type: ignore[union-attr]
    assert model.signature.output("probabilities").labels == (0, 10, 20)  # type: ignore[union-attr]


def add_model(path: Path, *, shape: list[Any], location: str | None = None) -> Path:
    """Y = X + W (W: one float per column), saved with W as external data when ``location`` is given."""
    w = numpy_helper.from_array(np.arange(shape[-1], dtype=np.float32), "W")
    graph = helper.make_graph(
        [helper.make_node("Add", ["X", "W"], ["Y"])],
        "add",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, shape)],
        [w],
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    if location is None:
        onnx.save_model(proto, str(path))
    else:
        onnx.save_model(proto, str(path), save_as_external_data=True, location=location, size_threshold=0)
    return path


def relocate(path: Path, location: str) -> None:
    """Point the external tensor at ``location`` (the data file itself is left where it is)."""
    proto = onnx.load(str(path), load_external_data=False)
    for entry in proto.graph.initializer[0].external_data:
        if entry.key == "location":
            entry.value = location
    onnx.save_model(proto, str(path))


def test_external_data_inside_the_directory_loads(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    path = add_model(tmp_path / "m.onnx", shape=["N", 16], location="data/w.bin")
    assert (tmp_path / "data" / "w.bin").exists()
    model = load_onnx(path)
    x = np.ones((2, 16), dtype=np.float32)
    np.testing.assert_array_equal(model.predict({"X": x})["Y"], x + np.arange(16, dtype=np.float32))


@pytest.mark.parametrize("kind", ["dotdot", "absolute", "symlink"])
def test_external_data_outside_the_directory_is_refused(tmp_path: Path, kind: str) -> None:
    outside = tmp_path / "outside.bin"
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    path = add_model(model_dir / "m.onnx", shape=["N", 16], location="w.bin")
    (model_dir / "w.bin").rename(outside)
    location = {"dotdot": "../outside.bin", "absolute": str(outside), "symlink": "link.bin"}[kind]
    if kind == "symlink":
        (model_dir / "link.bin").symlink_to(outside)
    relocate(path, location)
    with pytest.raises(ModelLoadError, match=r"tensor 'W' keeps its data at .*outside the model's directory") as info:
        load_onnx(path)
    assert repr(location) in str(info.value)


def test_symlink_inside_the_directory_is_allowed(tmp_path: Path) -> None:
    path = add_model(tmp_path / "m.onnx", shape=["N", 16], location="w.bin")
    (tmp_path / "w.bin").rename(tmp_path / "real.bin")
    (tmp_path / "link.bin").symlink_to(tmp_path / "real.bin")
    relocate(path, "link.bin")
    assert load_onnx(path).signature.input_names == ["X"]


def test_column_inputs_are_served_as_1d_and_fixed_batch_kept(tmp_path: Path) -> None:
    col = load_onnx(add_model(tmp_path / "col.onnx", shape=[None, 1]))
    spec = col.signature.input("X")
    assert spec.shape == (-1,)
    x = col.signature.validate({"X": np.array([1.0, 2.0])})
    np.testing.assert_array_equal(col.predict(x)["Y"], [[1.0], [2.0]])
    fixed = load_onnx(add_model(tmp_path / "fixed.onnx", shape=[2, 16]))
    assert fixed.signature.input("X").shape == (2, 16)


def test_missing_onnxruntime_says_how_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = add_model(tmp_path / "m.onnx", shape=["N", 16])
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(ModelLoadError, match=r"ONNX models need onnxruntime: pip install 'modelapi\[onnx\]'"):
        load_onnx(path)


def test_not_an_onnx_file(tmp_path: Path) -> None:
    path = tmp_path / "junk.onnx"
    path.write_bytes(b"\x00garbage\xff" * 10)
    with pytest.raises(ModelLoadError, match=r"junk\.onnx"):
        load_onnx(path)
