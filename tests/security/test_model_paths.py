"""Model-relative paths in an MLflow model directory cannot leave it (``../``, absolute paths, symlinks out);
ONNX external data has the same tests in tests/models/test_onnx.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from modelapi.errors import ModelLoadError
from modelapi.models.mlflow_model import load_mlflow
from modelapi.models.trust import Trust


@pytest.mark.parametrize("kind", ["dotdot", "absolute", "symlink"])
@pytest.mark.parametrize(("flavor", "key"), [("onnx", "data"), ("sklearn", "pickled_model")])
def test_mlflow_artefact_outside_the_directory(tmp_path: Path, kind: str, flavor: str, key: str) -> None:
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    outside = tmp_path / "outside.bin"
    outside.write_bytes(b"not a model")
    location = {"dotdot": "../outside.bin", "absolute": str(outside), "symlink": "link.bin"}[kind]
    if kind == "symlink":
        (model_dir / "link.bin").symlink_to(outside)
    (model_dir / "MLmodel").write_text(f"flavors:\n  {flavor}:\n    {key}: {location}\n")
    with pytest.raises(ModelLoadError, match="points outside the model directory"):
        load_mlflow(model_dir, Trust(trust_pickle=True))
