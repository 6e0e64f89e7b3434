"""The KServe SDK's gRPC client (``kserve.InferenceGRPCClient``), unchanged, against the real server.

The SDK is not in the ``dev`` extra: kserve 0.21 pins ``protobuf<7``, which grpcio-health-checking and
grpcio-reflection 1.85 (``protobuf>=7.35``) exclude, and it brings 67 wheels (74 MB: kubernetes, fastapi,
grpcio-tools...). So it lives in a virtualenv of its own, and this test runs the client there::

    python3.11 -m venv /tmp/kserve-venv && /tmp/kserve-venv/bin/pip install kserve
    KSERVE_PYTHON=/tmp/kserve-venv/bin/python pytest tests/e2e/test_grpc_kserve.py
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

from toymodels import IRIS_FEATURES, IrisClassifier

from .server import free_port, serve

CLIENT = """
import asyncio, json, sys
import numpy as np
from kserve import InferenceGRPCClient, InferInput, InferRequest

FEATURES = json.loads(sys.argv[2])
ROWS = np.array(json.loads(sys.argv[3]))

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
    print(json.dumps(out))

asyncio.run(main())
"""


def test_kserve_grpc_client(tmp_path: Path) -> None:
    python = os.environ.get("KSERVE_PYTHON")
    if not python:
        pytest.skip("KSERVE_PYTHON is not set (a Python with the kserve SDK; see this module's docstring)")
    rows = np.array([[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]])
    model = IrisClassifier()
    model.load()
    want = model.predict({f: rows[:, i] for i, f in enumerate(IRIS_FEATURES)})
    port = free_port()
    with serve("toymodels:IrisClassifier", "--grpc-port", str(port), tmp_dir=tmp_path):
        args = [f"127.0.0.1:{port}", json.dumps(IRIS_FEATURES), json.dumps(rows.tolist())]
        done = subprocess.run([python, "-c", CLIENT, *args], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["ready"] == [True, True, True]
    for form in ("raw", "typed"):
        assert out[form]["id"] == "k-1"
        assert out[form]["label"] == list(want["label"])
        np.testing.assert_allclose(out[form]["probabilities"], want["probabilities"])
    assert out["error"][0] == "StatusCode.NOT_FOUND" and out["error"][1].startswith("no model named 'nope'")
