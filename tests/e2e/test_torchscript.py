"""`modelapi serve model.pt` for a traced TorchScript module with no sidecar, on the real server (the refusal of
a scripted one is in tests/models/test_torch.py)."""

from __future__ import annotations

from pathlib import Path

import httpx
import numpy as np
import pytest

from .server import serve

torch = pytest.importorskip("torch")


class Scorer(torch.nn.Module):  # type: ignore[misc]
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.linear = torch.nn.Linear(3, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.linear(x), dim=-1)


@pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")
def test_a_traced_module_serves_without_a_sidecar(tmp_path: Path) -> None:
    module = Scorer().eval()
    path = tmp_path / "scorer.pt"
    torch.jit.save(torch.jit.trace(module, torch.zeros(4, 3)), path)
    x = np.array([[0.5, -1.0, 2.0], [1.5, 0.0, -0.5]], dtype=np.float32)
    with torch.inference_mode():
        want = module(torch.from_numpy(x)).numpy()
    with serve(str(path), tmp_dir=tmp_path, timeout=180) as server:
        metadata = httpx.get(f"{server.url}/v2/models/scorer", timeout=30).json()
        body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [2, 3], "data": x.ravel().tolist()}]}
        answer = httpx.post(f"{server.url}/v2/models/scorer/infer", json=body, timeout=30).json()
        record = httpx.post(f"{server.url}/models/scorer/predict", json={"x": x[0].tolist()}, timeout=30)
    assert metadata["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [-1, 3]}]
    assert metadata["outputs"] == [{"name": "output", "datatype": "FP32", "shape": [-1, 2]}]
    (output,) = answer["outputs"]
    np.testing.assert_allclose(np.array(output["data"]).reshape(output["shape"]), want, rtol=1e-6)
    assert record.status_code == 200 and record.json()["prediction"] == pytest.approx(want[0].tolist(), rel=1e-6)
