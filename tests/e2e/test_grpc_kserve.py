"""The KServe SDK's gRPC client (``kserve.InferenceGRPCClient``), unchanged, against the real server: the iris
model's named features, raw and typed, and KServe's documented sklearn V2 body for its iris SVC.

The SDK is not in the ``dev`` extra: kserve 0.21 pins ``protobuf<7``, which grpcio-health-checking and
grpcio-reflection 1.85 (``protobuf>=7.35``) exclude, and it brings 67 wheels (74 MB: kubernetes, fastapi,
grpcio-tools...). So it lives in a virtualenv of its own, ``.venv-kserve`` at the repository root, which
``.ci/run`` creates from ``.ci/kserve.txt``; this test runs the client with its Python (``KSERVE_PYTHON``
names another). Locally::

    python3 -m venv .venv-kserve && .venv-kserve/bin/pip install -r .ci/kserve.txt

Without it the test skips, except in CI (``CI=true``), where it fails.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from helpers.foreign_bodies import BODIES
from helpers.ports import free_port
from toymodels import IRIS_FEATURES, IrisClassifier

from .server import serve

ROOT = Path(__file__).resolve().parents[2]
#: KServe's sklearn V2 example (docs/samples/v1beta1/sklearn/v2/iris-input.json), for an SVC on the iris arrays
SKLEARN_V2 = next(b for b in BODIES if b.id == "kserve-sklearn-v2")

CLIENT = """
import asyncio, json, sys
import numpy as np
from kserve import InferenceGRPCClient, InferInput, InferRequest

FEATURES = json.loads(sys.argv[2])
ROWS = np.array(json.loads(sys.argv[3]))
FOREIGN = json.loads(sys.argv[4])  # {"model": ..., "body": a V2 JSON request body}
DTYPES = {"FP32": np.float32, "FP64": np.float64, "INT32": np.int32, "INT64": np.int64}

async def main():
    out = {}
    async with InferenceGRPCClient(sys.argv[1]) as client:
        live, ready = await client.is_server_live(), await client.is_server_ready()
        out["ready"] = [live, ready, await client.is_model_ready("iris")]
        for raw in (True, False):
            inputs = []
            for i, name in enumerate(FEATURES):
                tensor = InferInput(name, [len(ROWS)], "FP64")
                tensor.set_data_from_numpy(np.ascontiguousarray(ROWS[:, i]), binary_data=raw)
                inputs.append(tensor)
            answer = await client.infer(InferRequest("iris", inputs, request_id="k-1"))
            plain = {o.name: o.as_numpy().tolist() for o in answer.outputs}
            plain["label"] = [v.decode() if isinstance(v, bytes) else v for v in plain["label"]]
            out["raw" if raw else "typed"] = {"id": answer.id, **plain}
        try:
            await client.infer(InferRequest("nope", inputs))
        except Exception as exc:
            out["error"] = [str(exc.code()), exc.details()]
        # a V2 JSON body as a KServe user sends it over gRPC: each tensor's data as numpy, raw and typed
        for raw in (True, False):
            inputs = []
            for item in FOREIGN["body"]["inputs"]:
                tensor = InferInput(item["name"], item["shape"], item["datatype"])
                data = np.array(item["data"], dtype=DTYPES[item["datatype"]]).reshape(item["shape"])
                tensor.set_data_from_numpy(data, binary_data=raw)
                inputs.append(tensor)
            answer = await client.infer(InferRequest(FOREIGN["model"], inputs))
            out["foreign-raw" if raw else "foreign-typed"] = {o.name: o.as_numpy().tolist() for o in answer.outputs}
    print(json.dumps(out))

asyncio.run(main())
"""


def kserve_python() -> str:
    """The Python with the kserve SDK: ``KSERVE_PYTHON``, else ``.venv-kserve`` (made by .ci/run)."""
    named = os.environ.get("KSERVE_PYTHON")
    if named:
        return named
    own = ROOT / ".venv-kserve" / "bin" / "python"
    if own.exists():
        return str(own)
    how = "python3 -m venv .venv-kserve && .venv-kserve/bin/pip install -r .ci/kserve.txt, or set KSERVE_PYTHON"
    if os.environ.get("CI") == "true":
        pytest.fail(f"the kserve SDK's virtualenv .venv-kserve is required in CI ({how})")
    pytest.skip(f"no virtualenv with the kserve SDK ({how})")


def _iris_svc(path: Path) -> Any:
    """An SVC on the iris arrays, as KServe's sklearn sample trains it, saved as ``path``."""
    import skops.io as sio
    from sklearn import datasets, svm

    iris = datasets.load_iris()
    model = svm.SVC(gamma="scale").fit(iris.data, iris.target)
    sio.dump(model, path)
    return model


def test_kserve_grpc_client(tmp_path: Path) -> None:
    python = kserve_python()
    rows = np.array([[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]])
    model = IrisClassifier()
    model.load()
    want = model.predict({f: rows[:, i] for i, f in enumerate(IRIS_FEATURES)})
    svc = _iris_svc(tmp_path / f"{SKLEARN_V2.model}.skops")
    foreign = np.array(SKLEARN_V2.body["inputs"][0]["data"])
    port = free_port()
    served = ("toymodels:IrisClassifier", str(tmp_path / f"{SKLEARN_V2.model}.skops"))
    with serve(*served, "--grpc-port", str(port), tmp_dir=tmp_path):
        body = json.dumps({"model": SKLEARN_V2.model, "body": SKLEARN_V2.body})
        args = [f"127.0.0.1:{port}", json.dumps(IRIS_FEATURES), json.dumps(rows.tolist()), body]
        done = subprocess.run([python, "-c", CLIENT, *args], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["ready"] == [True, True, True]
    for form in ("raw", "typed"):
        assert out[form]["id"] == "k-1"
        assert out[form]["label"] == list(want["label"])
        np.testing.assert_allclose(out[form]["probabilities"], want["probabilities"])
    assert out["error"][0] == "StatusCode.NOT_FOUND" and out["error"][1].startswith("no model named 'nope'")
    for form in ("foreign-raw", "foreign-typed"):  # the label per row, as the SVC predicts and KServe documents
        assert out[form] == {"label": svc.predict(foreign).tolist()}, form
        assert out[form]["label"] == SKLEARN_V2.expect
