"""``load_model(spec)``: pick a loader by file suffix, a directory's one model file, or ``module:Class``.

The artefact is read here, so the returned model's signature is ready at once (``modelapi inspect`` prints it
without starting a server); ``Model.load()`` is left as a warm-up hook.

An optional sidecar ``<stem>.examples.json`` next to a model file gives example values for the inputs, shown in
the API docs: ``{"inputs": {"sepal_length": 5.1, ...}}`` (one row per input name).

A directory with an ``MLmodel`` file is an MLflow model. Loaders for optional formats import their library only
when asked, and say which extra to install when it is missing.
"""

from __future__ import annotations

import json
import re
from dataclasses import replace
from pathlib import Path
from typing import Any

from ..errors import ModelLoadError
from ..signature import Signature
from .base import Model
from .python import is_class_spec, load_class
from .trust import Trust

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
PICKLE_SUFFIXES = (".joblib", ".pkl", ".pickle")
XGBOOST_SUFFIXES = (".json", ".ubj")
LIGHTGBM_SUFFIXES = (".lgb", ".lgbm", ".txt")
TORCH_SUFFIXES = (".pt", ".pth", ".pt2")
SUFFIXES = (".skops", ".onnx", *PICKLE_SUFFIXES, *XGBOOST_SUFFIXES, *LIGHTGBM_SUFFIXES, *TORCH_SUFFIXES)
FORMATS = (
    "supported: .skops (scikit-learn), .onnx, .joblib/.pkl/.pickle (pickle-based: needs --trust-pickle or "
    "--sha256), .json/.ubj (XGBoost), .txt/.lgb/.lgbm (LightGBM), .pt/.pth (TorchScript, or a torch.save pickle), "
    ".pt2 (torch.export), "
    "a directory holding one such file or an MLflow model (MLmodel), or a Python class 'package.module:ClassName'"
)
EXAMPLES_SUFFIX = ".examples.json"
#: sidecar files that sit beside a model file and are never models themselves
SIDECAR_SUFFIXES = (EXAMPLES_SUFFIX, ".signature.json")


def load_model(
    spec: str | Path,
    *,
    name: str | None = None,
    trust: Trust = Trust(),  # noqa: B008
    device: str = "cpu",
) -> Model:
    """Load the model that ``spec`` names, ready to describe; raises ``ModelLoadError`` with the reason.

    ``device`` places models that can run on an accelerator (PyTorch): ``cpu``, ``cuda`` or ``cuda:N``.
    """
    path = Path(spec)
    if isinstance(spec, str) and not path.exists() and is_class_spec(spec):
        model = load_class(spec)
        model.name = _checked_name(name or model.name or spec.rsplit(":", 1)[1].lower(), spec)
        return model
    if not path.exists():
        raise ModelLoadError(f"no such model file or directory: {spec}; {FORMATS}")
    default_name = path.resolve().name
    if path.is_dir() and (path / "MLmodel").is_file():
        from .mlflow_model import load_mlflow

        mlflow_model = load_mlflow(path, trust)
        mlflow_model.name = _checked_name(name or default_name, str(spec))
        return mlflow_model
    if path.is_dir():
        path = _only_model_file(path)
    else:
        default_name = path.stem
    model = _load_file(path, trust, device)
    model.name = _checked_name(name or default_name, str(spec))
    _apply_examples(model, path)
    return model


def _load_file(path: Path, trust: Trust, device: str = "cpu") -> Model:
    suffix = path.suffix.lower()
    if suffix == ".skops":
        from .sklearn import load_skops

        return load_skops(path)
    if suffix in PICKLE_SUFFIXES:
        from .sklearn import load_pickle

        return load_pickle(path, trust)
    if suffix == ".onnx":
        from .onnx import load_onnx

        return load_onnx(path)
    if suffix in XGBOOST_SUFFIXES:
        from .xgboost_model import load_xgboost

        return load_xgboost(path)
    if suffix in LIGHTGBM_SUFFIXES:
        from .lightgbm_model import load_lightgbm

        return load_lightgbm(path)
    if suffix in TORCH_SUFFIXES:
        from .torch_model import load_torch

        return load_torch(path, trust, device)
    raise ModelLoadError(f"unknown model format {suffix or '(no suffix)'!r} for {path}; {FORMATS}")


def _only_model_file(directory: Path) -> Path:
    found = sorted(p for p in directory.iterdir() if p.is_file() and is_model_file(p))
    if len(found) == 1:
        return found[0]
    if not found:
        raise ModelLoadError(f"directory {directory} holds no model file; {FORMATS}")
    listed = ", ".join(p.name for p in found)
    raise ModelLoadError(f"directory {directory} holds several model files ({listed}); name the one to serve")


def is_model_file(path: Path) -> bool:
    """A file a directory may hold as its model: a known suffix, not a sidecar; .json/.txt only when sniffed."""
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES or path.name.lower().endswith(SIDECAR_SUFFIXES):
        return False
    if suffix == ".json":
        return _starts_with(path, (b'{"learner"',))
    if suffix == ".txt":
        return _starts_with(path, (b"tree\n", b"tree\r"))
    return True


def _starts_with(path: Path, prefixes: tuple[bytes, ...]) -> bool:
    try:
        with open(path, "rb") as fh:
            head = fh.read(16)
    except OSError:
        return False
    return head.startswith(prefixes)


def _checked_name(name: str, spec: str) -> str:
    if NAME.match(name) is None:
        raise ModelLoadError(
            f"model name {name!r} (from {spec}) cannot be used in URLs: names start with a letter or digit and "
            "hold up to 128 letters, digits, '_', '.' or '-'; choose one with --name"
        )
    return name


def _apply_examples(model: Model, path: Path) -> None:
    sidecar = path.with_name(path.stem + EXAMPLES_SUFFIX)
    if not sidecar.is_file():
        return
    try:
        data: Any = json.loads(sidecar.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"cannot read examples {sidecar}: {exc}") from exc
    examples = data.get("inputs") if isinstance(data, dict) else None
    if not isinstance(examples, dict):
        raise ModelLoadError(f'examples {sidecar}: expected {{"inputs": {{"<input name>": <value>, ...}}}}')
    sig = model.signature
    unknown = [k for k in examples if k not in sig.input_names]
    if unknown:
        raise ModelLoadError(
            f"examples {sidecar}: unknown inputs {', '.join(unknown)}; the model's inputs: {', '.join(sig.input_names)}"
        )
    inputs = tuple(replace(s, example=examples[s.name]) if s.name in examples else s for s in sig.inputs)
    model.signature = Signature(inputs, sig.outputs)
    model.info = {**getattr(model, "info", {}), "examples": str(sidecar)}
