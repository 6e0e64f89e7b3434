"""The minimal request: orjson decode, a numpy array, the model's predictions, orjson encode. No modelapi code.

Both yardsticks of the bench run exactly this per request: the in-process limit (``inprocess.py``, in a loop
with no HTTP) and the HTTP floor (``floor.py``, once per request behind a bare ASGI app). The answer has the
friendly route's content (label and class probabilities per row), so each does the model work modelapi does
(``predict`` and ``predict_proba``, as modelapi's scikit-learn adapter calls them) and nothing else.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from typing import Any

import numpy as np
import orjson


def load(model_path: Path) -> Any:
    """The skops file loaded with skops directly, trusting the types it lists (the bench wrote it).

    skops lists scikit-learn's estimators on import by walking sklearn's packages, which imports PyTorch where
    it is installed; that module is hidden for the import so that the yardsticks hold the same libraries as a
    modelapi worker (modelapi does the same when it imports skops): PyTorch in a process makes the model's
    calls measurably slower and its memory 230 MiB larger.
    """
    hidden = "sklearn.externals.array_api_compat.torch"
    if "skops.io" not in sys.modules and "torch" not in sys.modules:
        sys.modules[hidden] = None  # type: ignore[assignment]
    try:
        sio = importlib.import_module("skops.io")
    finally:
        if sys.modules.get(hidden, 0) is None:
            del sys.modules[hidden]
    return sio.load(model_path, trusted=sio.get_untrusted_types(file=model_path))


def class_keys(est: Any) -> list[str]:
    return [str(c) for c in est.classes_]


def handle(est: Any, keys: list[str], body: bytes) -> bytes:
    """One request: a record (or a list of records) of ``{"input": [...]}`` in, the friendly answer out."""
    data = orjson.loads(body)
    records = data if isinstance(data, list) else [data]
    X = np.array([r["input"] for r in records], dtype=np.float64)
    labels = est.predict(X).tolist()
    proba = est.predict_proba(X).tolist()
    out = [
        {"prediction": lab, "probabilities": dict(zip(keys, p, strict=True))}
        for lab, p in zip(labels, proba, strict=True)
    ]
    return orjson.dumps(out[0] if isinstance(data, dict) else {"predictions": out})
