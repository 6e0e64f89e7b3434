"""``modelapi serve /mnt/models``, run as the KServe runtime runs it (``--model-name`` set to the
InferenceService's name), on each layout KServe's storage initializer leaves: one model file, a directory's
contents holding one model file (with sidecars and other files) or an MLflow model, and a repository. Each
answers over V2 and V1 under the expected names."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest

from helpers.repo import classifier, skops_bytes

from .server import serve

KSERVE_ARGS = ("--model-name", "iris", "--log-level", "warning")


def _row(metadata: dict[str, Any]) -> dict[str, Any]:
    """One row with the first feature at 1.0 and the rest 0, by input name, for any of these models."""
    inputs = metadata["inputs"]
    if len(inputs) == 1:
        width = inputs[0]["shape"][-1]
        return {inputs[0]["name"]: [1.0] + [0.0] * (width - 1)}
    return {spec["name"]: 1.0 if i == 0 else 0.0 for i, spec in enumerate(inputs)}


def _answers(url: str, name: str) -> tuple[str, str]:
    """The model's label for the row, over V2 and over V1."""
    metadata = httpx.get(f"{url}/v2/models/{name}", timeout=10).json()
    row = _row(metadata)
    tensors = [
        {"name": k, "datatype": "FP64", "shape": [1, len(v)] if isinstance(v, list) else [1], "data": [v]}
        for k, v in row.items()
    ]
    v2 = httpx.post(f"{url}/v2/models/{name}/infer", json={"inputs": tensors}, timeout=10)
    assert v2.status_code == 200, v2.text
    outputs = {o["name"]: o["data"] for o in v2.json()["outputs"]}
    label = outputs.get("label", outputs.get("prediction"))
    v1 = httpx.post(f"{url}/v1/models/{name}:predict", json={"instances": [row]}, timeout=10)
    assert v1.status_code == 200, v1.text
    return str(label[0]), str(v1.json()["predictions"][0])


def _models(url: str) -> list[str]:
    index = httpx.get(f"{url}/v1/models", timeout=10)
    if index.status_code == 200 and "models" in index.json():
        return sorted(index.json()["models"])
    return sorted(m["name"] for m in httpx.get(f"{url}/models", timeout=10).json()["models"])


def test_one_model_file(tmp_path: Path) -> None:
    mnt = tmp_path / "mnt" / "models"
    mnt.mkdir(parents=True)
    (mnt / "model.skops").write_bytes(skops_bytes("file"))  # storageUri gs://bucket/model.skops
    with serve(str(mnt), *KSERVE_ARGS, tmp_dir=tmp_path) as server:
        assert _answers(server.url, "iris") == ("file-hi", "file-hi")
        assert httpx.get(f"{server.url}/v2/models/model", timeout=10).status_code == 404


def test_a_directory_with_one_model_file_and_others(tmp_path: Path) -> None:
    mnt = tmp_path / "mnt" / "models"
    mnt.mkdir(parents=True)
    (mnt / "churn.skops").write_bytes(skops_bytes("dir"))  # storageUri gs://bucket/churn/ (copied file by file)
    (mnt / "churn.examples.json").write_text('{"inputs": {"input": [0.5, 0.0, 0.0]}}')
    (mnt / "README.md").write_text("trained 2026-12-01\n")
    with serve(str(mnt), *KSERVE_ARGS, tmp_dir=tmp_path) as server:
        assert _answers(server.url, "iris") == ("dir-hi", "dir-hi")
        example = httpx.get(f"{server.url}/models/iris", timeout=10).json()["example"]["request"]
        assert example == {"input": [0.5, 0.0, 0.0]}  # the sidecar beside the file is read


def test_an_mlflow_model(tmp_path: Path) -> None:
    mlflow_sklearn = pytest.importorskip("mlflow.sklearn")
    from mlflow.models import infer_signature

    mnt = tmp_path / "mnt" / "models"
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(rng.normal(size=(40, 3)), columns=["a", "b", "c"])
    labels = np.where(frame["a"] > 0, "ml-hi", "ml-lo")
    model = classifier("ml").fit(frame, labels)
    mlflow_sklearn.save_model(model, mnt, signature=infer_signature(frame, labels), pip_requirements=[])
    with serve(str(mnt), *KSERVE_ARGS, tmp_dir=tmp_path) as server:
        assert _answers(server.url, "iris") == ("ml-hi", "ml-hi")


def test_a_repository_keeps_its_names(tmp_path: Path) -> None:
    mnt = tmp_path / "mnt" / "models"
    for name, version in (("churn", 1), ("churn", 2), ("fraud", 1)):
        (mnt / name / str(version)).mkdir(parents=True)
        (mnt / name / str(version) / "model.skops").write_bytes(skops_bytes(f"{name}{version}"))
    shutil.copy(mnt / "fraud" / "1" / "model.skops", mnt / "loose.skops")
    with serve(str(mnt), *KSERVE_ARGS, tmp_dir=tmp_path) as server:
        assert _models(server.url) == ["churn", "fraud", "loose"]  # --model-name names a single model only
        assert _answers(server.url, "churn") == ("churn2-hi", "churn2-hi")  # the newest version by default
        assert _answers(server.url, "fraud") == ("fraud1-hi", "fraud1-hi")
        assert httpx.get(f"{server.url}/v2/models/iris", timeout=10).status_code == 404
