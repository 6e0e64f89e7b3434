"""scikit-learn models: ``.skops`` files (trusted types only) and joblib/pickle files (only when trusted)."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from ..errors import InvalidInput, ModelLoadError, UntrustedModel
from .base import Model
from .sklearn_signature import Categorical, categorical_columns, derive_signature
from .trust import Trust


class SklearnModel(Model):
    """A fitted scikit-learn estimator (or pipeline) behind the model contract."""

    platform: ClassVar[str] = "sklearn"

    def __init__(self, estimator: Any, *, info: Mapping[str, Any] | None = None) -> None:
        self.estimator = estimator
        self.signature, self._columns = derive_signature(estimator)
        self._strict = {n: c for n, c in categorical_columns(estimator).items() if c.strict}
        self._proba = self.signature.output("probabilities") is not None
        self._classifier = self.signature.output("label") is not None
        self.info = {"estimator": describe_estimator(estimator), **(info or {})}

    def predict(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        try:
            return self._predict(inputs)
        except ValueError as exc:
            # scikit-learn's own input check, e.g. finite values whose sums overflow (found by fuzzing): the
            # client's input, so a 400 that says why, not a 500
            if str(exc).startswith(("Input X contains", "Input contains")):
                raise InvalidInput(f"the model cannot take this input: {exc}") from None
            raise

    def _predict(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        X = self._frame(inputs)
        rows = len(X)
        out: dict[str, np.ndarray] = {}
        if self._classifier:
            label = np.asarray(self.estimator.predict(X))
            out["label"] = label.astype(object) if label.dtype.kind in "US" else label
            if self._proba:
                out["probabilities"] = np.asarray(self.estimator.predict_proba(X), dtype=np.float64)
        else:
            spec = self.signature.outputs[0]
            pred = np.asarray(self.estimator.predict(X), dtype=np.float64)
            fits = pred.size == rows * _size(spec.row_shape)
            out[spec.name] = pred.reshape((rows, *spec.row_shape)) if fits else pred
        return out

    def _frame(self, inputs: Mapping[str, np.ndarray]) -> Any:
        if self._columns is None:
            return inputs["input"]
        import pandas as pd

        columns = {name: _text(inputs[name]) for name in self._columns}
        for name, cat in self._strict.items():
            _check_categories(name, cat, columns[name])
        return pd.DataFrame(columns)


def _text(values: np.ndarray) -> np.ndarray:
    """BYTES inputs may arrive as bytes; scikit-learn was fitted on str."""
    if values.dtype.kind != "O" or not any(isinstance(v, bytes) for v in values):
        return values
    return np.array([v.decode("utf-8", "replace") if isinstance(v, bytes) else v for v in values], dtype=object)


def _size(shape: tuple[int, ...]) -> int:
    return int(np.prod(shape)) if shape else 1


def _check_categories(name: str, cat: Categorical, values: np.ndarray) -> None:
    """Unknown categories are the client's mistake; say so rather than let the encoder fail."""
    import pandas as pd

    series = pd.Series(values, dtype=object)
    bad = ~(series.isin(cat.categories) | series.isna())
    if bad.any():
        i = int(np.argmax(bad.to_numpy()))
        raise InvalidInput(
            f"input '{name}': unknown category {values[i]!r} at index {i}; expected {cat.describe()}", field=name
        )


def describe_estimator(est: Any) -> str:
    """``Pipeline(StandardScaler, LogisticRegression)`` for a pipeline, the class name otherwise."""
    steps = getattr(est, "steps", None)
    if steps:
        return f"{type(est).__name__}({', '.join(describe_estimator(s) for _, s in steps)})"
    return type(est).__name__ if not isinstance(est, str) else est


#: Types modelapi trusts on top of skops's defaults. ``numpy.dtype`` is rebuilt by skops from an empty array read
#: with ``np.load(allow_pickle=False)``, so no code runs; skops leaves it untrusted only pending a decision
#: (a TODO in ``skops.io._numpy.DTypeNode``), which keeps common estimators such as ``SimpleImputer`` out.
EXTRA_TRUSTED_TYPES = frozenset({"numpy.dtype"})


def import_skops() -> Any:
    """Import ``skops.io`` without dragging in PyTorch.

    On import, skops lists scikit-learn's estimators by walking every sklearn package, and that walk imports
    ``sklearn.externals.array_api_compat.torch``, hence all of PyTorch when it is installed (~230 MiB and
    seconds of start-up in every server process). The walk skips packages that fail to import, so that one is
    hidden for the duration of the import; sklearn can still import it later if a model uses it.
    """
    if "skops.io" in sys.modules or "torch" in sys.modules:
        return importlib.import_module("skops.io")
    hidden = "sklearn.externals.array_api_compat.torch"
    sys.modules[hidden] = None  # type: ignore[assignment]
    try:
        return importlib.import_module("skops.io")
    finally:
        if sys.modules.get(hidden, 0) is None:
            del sys.modules[hidden]


def load_skops(path: Path) -> SklearnModel:
    """Load a ``.skops`` file, refusing any type that neither skops nor ``EXTRA_TRUSTED_TYPES`` trusts."""
    sio = import_skops()

    try:
        found = sio.get_untrusted_types(file=path)
    except Exception as exc:
        raise ModelLoadError(f"cannot read {path} as a skops file: {exc}") from exc
    untrusted = [t for t in found if t not in EXTRA_TRUSTED_TYPES]
    if untrusted:
        raise UntrustedModel(
            f"refusing to load {path}: it contains types that skops does not trust: {', '.join(untrusted)}. "
            "modelapi refuses unknown types in .skops files, since loading them could run their code; rebuild the "
            "model from standard scikit-learn components"
        )
    try:
        est = sio.load(path, trusted=sorted(set(found) & EXTRA_TRUSTED_TYPES))
    except Exception as exc:
        raise ModelLoadError(f"cannot load {path} with skops: {exc}") from exc
    return _model(est, path, {"format": "skops", "source": str(path), "trust": "not needed (skops, trusted types)"})


def load_pickle(path: Path, trust: Trust) -> SklearnModel:
    """Load a joblib/pickle file, checking trust on the very bytes that are then unpickled."""
    import joblib

    with open(path, "rb") as fh:
        digest = trust.check_pickle_file(fh, path)
        fh.seek(0)
        try:
            est = joblib.load(fh)
        except Exception as exc:
            raise ModelLoadError(f"cannot unpickle {path}: {type(exc).__name__}: {exc}") from exc
    fmt = "joblib" if path.suffix == ".joblib" else "pickle"
    return _model(est, path, {"format": fmt, "source": str(path), "sha256": digest, "trust": trust.describe(digest)})


def _model(est: Any, path: Path, info: dict[str, Any]) -> SklearnModel:
    from sklearn.exceptions import NotFittedError
    from sklearn.utils.validation import check_is_fitted

    try:
        check_is_fitted(est)
    except NotFittedError:
        raise ModelLoadError(f"{path}: the {type(est).__name__} in it is not fitted; fit it before saving") from None
    except TypeError:
        raise ModelLoadError(f"{path} holds a {type(est).__name__}, not a scikit-learn estimator") from None
    return SklearnModel(est, info=info)
