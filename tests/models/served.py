"""Serve one loaded model in process and ask it through the friendly JSON and Open Inference Protocol routes."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
from starlette.testclient import TestClient

from modelapi.datatypes import DATATYPES
from modelapi.http.app import create_app
from modelapi.models.base import Model
from modelapi.settings import Settings


@contextlib.contextmanager
def serving(model: Model) -> Iterator[TestClient]:
    app = create_app([model], Settings(job_workers=0))
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client


def records(inputs: Mapping[str, np.ndarray]) -> list[dict[str, Any]]:
    """Column arrays -> one JSON record per row."""
    rows = len(next(iter(inputs.values())))
    return [{name: np.asarray(values[i]).tolist() for name, values in inputs.items()} for i in range(rows)]


def friendly(client: TestClient, name: str, inputs: Mapping[str, np.ndarray]) -> list[dict[str, Any]]:
    """``POST /models/{name}/predict`` with a list of records; the answer's rows."""
    response = client.post(f"/models/{name}/predict", json=records(inputs))
    assert response.status_code == 200, response.text
    rows: list[dict[str, Any]] = response.json()["predictions"]
    return rows


def v2(client: TestClient, name: str, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """``POST /v2/models/{name}/infer`` (JSON); the outputs as arrays of the answered shape."""
    body = {
        "inputs": [
            {"name": n, "datatype": datatype(a), "shape": list(a.shape), "data": a.ravel().tolist()}
            for n, a in inputs.items()
        ]
    }
    response = client.post(f"/v2/models/{name}/infer", json=body)
    assert response.status_code == 200, response.text
    return {
        o["name"]: np.array(o["data"], dtype=DATATYPES[o["datatype"]]).reshape(o["shape"])
        for o in response.json()["outputs"]
    }


def datatype(arr: np.ndarray) -> str:
    if arr.dtype.kind == "f":
        return "FP32" if arr.dtype == np.float32 else "FP64"
    return {"i": "INT64", "b": "BOOL"}.get(arr.dtype.kind, "BYTES")


def probabilities(rows: list[dict[str, Any]], labels: list[Any], key: str = "probabilities") -> np.ndarray:
    """The friendly answer's probability objects (keyed by label) as an [N, n_labels] array in label order."""
    return np.array([[row[key][str(label)] for label in labels] for row in rows])
