"""The benchmark's models and request bodies, and the answers they must get.

Models: the issue's ``LogisticRegression(max_iter=2000)`` on ``make_classification(...)``, and a 100-tree
``RandomForestClassifier`` (per-call overhead dominates a 1-row predict, so it gains from batching). Both are
fitted on a plain array, so modelapi serves them with one input ``input`` of shape ``[-1, 20]``. The logistic
regression is saved with skops, which both modelapi and the Flask baseline load. skops does not trust the
forest's ``sklearn.tree._tree.Tree``, so the forest is a joblib file that modelapi loads pinned by its SHA-256.

Bodies, for each row count: the friendly JSON record(s) (also what Flask and the in-process loop decode), the V2
JSON request, and the V2 binary request (Triton's binary tensor extension; outputs requested in binary).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson

N_FEATURES = 20
CLASSES = (0, 1, 2)
#: V2 datatypes the bench sends or reads as binary data -> their little-endian numpy dtypes
V2_DTYPES = {"INT64": "<i8", "FP64": "<f8", "FP32": "<f4", "INT32": "<i4"}


@dataclass(frozen=True)
class Body:
    """One request body as sent: the file wrk reads, its content type and binary-header length."""

    kind: str  # "rest", "v2-json" or "v2-binary"
    rows: int
    path: Path
    content_type: str
    header_length: int | None = None  # Inference-Header-Content-Length, for the binary form

    def data(self) -> bytes:
        return self.path.read_bytes()

    def headers(self) -> dict[str, str]:
        out = {"Content-Type": self.content_type}
        if self.header_length is not None:
            out["Inference-Header-Content-Length"] = str(self.header_length)
        return out


@dataclass(frozen=True)
class Workload:
    model_path: Path  # the LogisticRegression
    forest_path: Path  # the RandomForest (batching on/off), a joblib file
    forest_sha256: str
    rows: np.ndarray  # rows used in the bodies (first n rows for an n-row body)
    bodies: dict[tuple[str, int], Body]

    def body(self, kind: str, rows: int) -> Body:
        return self.bodies[(kind, rows)]


def _dataset() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import make_classification

    X, y = make_classification(
        n_samples=6024, n_features=N_FEATURES, n_informative=10, n_redundant=4, n_classes=3, random_state=42
    )
    return np.asarray(X, dtype=np.float64), np.asarray(y)


def build(directory: Path, row_counts: tuple[int, ...]) -> Workload:
    """Train both models, save them as skops files and write every body into ``directory``."""
    import joblib
    import skops.io as sio
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression

    directory.mkdir(parents=True, exist_ok=True)
    X, y = _dataset()
    model_path = directory / "logreg.skops"
    sio.dump(LogisticRegression(max_iter=2000).fit(X, y), model_path)
    forest_path = directory / "forest.joblib"
    joblib.dump(RandomForestClassifier(n_estimators=100, random_state=42).fit(X, y), forest_path)
    forest_sha256 = hashlib.sha256(forest_path.read_bytes()).hexdigest()
    rows = X[-max(row_counts) :]  # the last rows, as unseen-looking inputs
    bodies: dict[tuple[str, int], Body] = {}
    for n in row_counts:
        for body in _bodies(directory, rows[:n]):
            bodies[(body.kind, n)] = body
    return Workload(model_path, forest_path, forest_sha256, rows, bodies)


def rest_json(rows: np.ndarray) -> bytes:
    records = [{"input": row.tolist()} for row in rows]
    return orjson.dumps(records[0] if len(records) == 1 else records)


def _bodies(directory: Path, rows: np.ndarray) -> list[Body]:
    n = len(rows)
    rest = directory / f"rest-{n}.json"
    rest.write_bytes(rest_json(rows))
    tensor = {"name": "input", "datatype": "FP64", "shape": [n, N_FEATURES]}
    v2 = directory / f"v2-{n}.json"
    v2.write_bytes(orjson.dumps({"inputs": [{**tensor, "data": rows.reshape(-1).tolist()}]}))
    return [
        Body("rest", n, rest, "application/json"),
        Body("v2-json", n, v2, "application/json"),
        v2_binary(directory / f"v2-{n}.bin", "input", "FP64", rows),
    ]


def v2_binary(path: Path, name: str, datatype: str, tensor: np.ndarray) -> Body:
    """Write a V2 binary request for one input ``tensor`` (its first axis the rows) to ``path``: the JSON header
    with ``binary_data_size``, then the raw little-endian bytes; the outputs are asked for in binary too."""
    raw = np.ascontiguousarray(tensor, dtype=V2_DTYPES[datatype]).tobytes()
    spec = {"name": name, "datatype": datatype, "shape": list(tensor.shape)}
    header = orjson.dumps(
        {
            "inputs": [{**spec, "parameters": {"binary_data_size": len(raw)}}],
            "parameters": {"binary_data_output": True},
        }
    )
    path.write_bytes(header + raw)
    return Body("v2-binary", len(tensor), path, "application/octet-stream", len(header))


@dataclass(frozen=True)
class Answer:
    """Labels and class probabilities, whatever protocol carried them."""

    labels: np.ndarray
    probabilities: np.ndarray


def expected(model_path: Path, rows: np.ndarray) -> Answer:
    """What the model itself answers for ``rows``, loaded from the same skops file the servers load."""
    est = load(model_path)
    return Answer(np.asarray(est.predict(rows)), np.asarray(est.predict_proba(rows), dtype=np.float64))


def load(model_path: Path) -> Any:
    """A model file the bench wrote itself: skops, or joblib (trusted here, since the bench just made it)."""
    if model_path.suffix == ".joblib":
        import joblib

        return joblib.load(model_path)
    import skops.io as sio

    return sio.load(model_path, trusted=sio.get_untrusted_types(file=model_path))
