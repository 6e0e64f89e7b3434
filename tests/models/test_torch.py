"""PyTorch loader: TorchScript and torch.export programs trained here, served; answers equal the module's own."""

from __future__ import annotations

import json
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from served import friendly, probabilities, serving, v2

from modelapi.cli import main
from modelapi.errors import ModelLoadError, UntrustedModel
from modelapi.models.registry import load_model
from modelapi.models.trust import Trust

LABELS = ["cat", "dog", "emu"]


class Classifier(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.linear(x), dim=-1)


class TwoInputs(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(4, 2)

    def forward(self, x: torch.Tensor, scale: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y = self.linear(x) * scale
        return y, y.sum(dim=-1)


@pytest.fixture(scope="module")
def trained() -> Classifier:
    torch.manual_seed(0)
    X = torch.randn(64, 4)
    y = torch.argmax(X[:, :3], dim=1)
    model = Classifier()
    optimiser = torch.optim.SGD(model.parameters(), lr=0.5)
    for _ in range(30):
        optimiser.zero_grad()
        torch.nn.functional.nll_loss(torch.log(model(X)), y).backward()
        optimiser.step()
    return model.eval()


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory, trained: Classifier) -> Path:
    """The trained classifier as a torch.export program (exporting takes seconds: done once)."""
    return export(trained, (torch.randn(2, 4),), tmp_path_factory.mktemp("exported") / "animals.pt2")


def rows() -> np.ndarray:
    return np.random.RandomState(3).normal(size=(6, 4)).astype(np.float32)


def expected(module: torch.nn.Module, x: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        out: np.ndarray = module(torch.from_numpy(x)).numpy()
    return out


def sidecar(path: Path, data: object) -> None:
    path.with_name(path.stem + ".signature.json").write_text(json.dumps(data))


def export(module: torch.nn.Module, example: tuple[torch.Tensor, ...], path: Path) -> Path:
    batch = torch.export.Dim("batch")
    shapes = [{0: batch} for _ in example]
    torch.export.save(torch.export.export(module, example, dynamic_shapes=shapes), path)
    return path


def test_exported_program_with_labels_from_a_sidecar(tmp_path: Path, trained: Classifier, exported: Path) -> None:
    path = tmp_path / "animals.pt2"
    path.write_bytes(exported.read_bytes())
    sidecar(
        path,
        {
            "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 4]}],
            "outputs": [{"name": "probabilities", "datatype": "FP32", "shape": [-1, 3], "labels": LABELS}],
        },
    )
    model = load_model(path)
    assert model.platform == "pytorch" and model.info["device"] == "cpu"
    x = rows()
    want = expected(trained, x)
    with serving(model) as client:
        answer = friendly(client, "animals", {"x": x})
        outputs = v2(client, "animals", {"x": x})
        bad = client.post("/models/animals/predict", json={"x": [1.0, 2.0, 3.0]})
    # the only output is the prediction: an object of label -> probability per row
    np.testing.assert_array_equal(probabilities(answer, LABELS, key="prediction").astype(np.float32), want)
    np.testing.assert_array_equal(outputs["probabilities"], want)
    assert bad.status_code == 400 and "'x'" in bad.json()["detail"]


def test_exported_program_signature_comes_from_the_program(tmp_path: Path) -> None:
    torch.manual_seed(1)
    module = TwoInputs().eval()
    path = export(module, (torch.randn(2, 4), torch.ones(2, 1)), tmp_path / "two.pt2")
    model = load_model(path)
    sig = model.signature
    assert [(s.name, s.datatype, s.shape) for s in sig.inputs] == [("x", "FP32", (-1, 4)), ("scale", "FP32", (-1, 1))]
    assert [(s.name, s.shape) for s in sig.outputs] == [("output_0", (-1, 2)), ("output_1", (-1,))]
    x, scale = rows(), np.full((6, 1), 2.0, dtype=np.float32)
    with torch.inference_mode():
        y, total = module(torch.from_numpy(x), torch.from_numpy(scale))
    with serving(model) as client:
        outputs = v2(client, "two", {"x": x, "scale": scale})
        missing = client.post(
            "/v2/models/two/infer",
            json={"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}]},
        )
    np.testing.assert_array_equal(outputs["output_0"], y.numpy())
    np.testing.assert_array_equal(outputs["output_1"], total.numpy())
    assert missing.status_code == 400 and "scale" in missing.json()["error"]


class Mixed(torch.nn.Module):
    """Two inputs of different dtypes and a dict of outputs: what a traced file must carry through."""

    def forward(self, counts: torch.Tensor, x: torch.Tensor) -> dict[str, torch.Tensor]:
        scaled = x * counts.sum(dim=1, keepdim=True).to(x.dtype)
        return {"scaled": scaled, "total": counts.sum(dim=1)}


@pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")
def test_traced_module_serves_without_a_sidecar(tmp_path: Path, trained: Classifier) -> None:
    path = tmp_path / "traced.pt"
    torch.jit.save(torch.jit.trace(trained, torch.randn(2, 4)), path)
    model = load_model(path)
    assert model.signature.to_dict() == {
        "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 4]}],
        "outputs": [{"name": "output", "datatype": "FP32", "shape": [-1, 3]}],
    }
    assert model.info["format"] == "torchscript (traced)"
    assert model.info["signature"] == "the traced example inputs" and model.info["trust"].startswith("not needed")
    x = rows()
    with serving(model) as client:
        outputs = v2(client, "traced", {"x": x})
        one = v2(client, "traced", {"x": x[:1]})  # traced on 2 rows; any row count serves
    np.testing.assert_array_equal(outputs["output"], expected(trained, x))
    np.testing.assert_array_equal(one["output"], expected(trained, x[:1]))


class InPlace(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mul_(2.0)  # writes its input, as some modules' first step does


@pytest.mark.filterwarnings("error::UserWarning")
def test_a_read_only_input_is_copied_before_a_module_may_write_it(tmp_path: Path) -> None:
    # a V2 binary request's tensor views the request's own bytes: read-only memory the module must not write
    path = tmp_path / "inplace.pt"
    torch.jit.save(torch.jit.trace(InPlace(), torch.ones(2, 4)), path)
    model = load_model(path)
    x = rows()
    x.flags.writeable = False
    before = x.copy()
    out = model.predict({"x": x})
    np.testing.assert_array_equal(out["output"], before * 2)
    np.testing.assert_array_equal(x, before)


@pytest.mark.filterwarnings("error::UserWarning")
def test_a_read_only_input_is_copied_once_onto_a_device_off_the_cpu() -> None:
    """Off the CPU the module gets a tensor of the device's own memory anyway: the read-only input is copied onto
    the device, once, never first into another host array (``meta`` stands in for CUDA: a device with no host
    memory; numpy's allocations are traced by tracemalloc, torch's are not)."""
    import tracemalloc

    from modelapi.models.torch_model import TorchModel
    from modelapi.signature import Signature, TensorSpec

    seen: list[torch.Tensor] = []

    def module(x: torch.Tensor) -> torch.Tensor:
        seen.append(x)
        return torch.zeros(1, 1)

    signature = Signature([TensorSpec("x", "FP32", [-1, 8])], [TensorSpec("y", "FP32", [-1, 1])])
    model = TorchModel(module, signature, torch.device("meta"), {})
    x = np.frombuffer(bytes(8 << 20), dtype=np.float32).reshape(-1, 8)  # 8 MiB, read-only as a request's bytes
    tracemalloc.start()
    try:
        model.predict({"x": x})
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert seen[0].device.type == "meta" and seen[0].shape == x.shape and seen[0].dtype == torch.float32
    assert peak < x.nbytes // 8, f"{peak:,} bytes allocated on the host for an input of {x.nbytes:,}"


@pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")
def test_traced_module_keeps_each_inputs_dtype_and_names_dict_outputs(tmp_path: Path) -> None:
    path = tmp_path / "mixed.pt"
    example = (torch.ones(3, 2, dtype=torch.int64), torch.ones(3, 5, dtype=torch.float64))
    torch.jit.save(torch.jit.trace(Mixed(), example, strict=False), path)
    model = load_model(path)
    assert model.signature.to_dict() == {
        "inputs": [
            {"name": "counts", "datatype": "INT64", "shape": [-1, 2]},
            {"name": "x", "datatype": "FP64", "shape": [-1, 5]},
        ],
        "outputs": [
            {"name": "scaled", "datatype": "FP64", "shape": [-1, 5]},
            {"name": "total", "datatype": "INT64", "shape": [-1]},
        ],
    }
    counts = np.array([[1, 2], [3, 4]], dtype=np.int64)
    x = np.arange(10, dtype=np.float64).reshape(2, 5)
    with serving(model) as client:
        outputs = v2(client, "mixed", {"counts": counts, "x": x})
        wrong = client.post("/models/mixed/predict", json={"counts": [1.5, 2], "x": [0, 0, 0, 0, 0]})
    np.testing.assert_array_equal(outputs["scaled"], x * counts.sum(axis=1, keepdims=True))
    np.testing.assert_array_equal(outputs["total"], counts.sum(axis=1))
    assert wrong.status_code == 400 and "counts" in wrong.text


@pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")
def test_a_sidecar_names_a_traced_modules_tensors(tmp_path: Path, trained: Classifier) -> None:
    path = tmp_path / "animals.pt"
    torch.jit.save(torch.jit.trace(trained, torch.randn(2, 4)), path)
    sidecar(
        path,
        {
            "inputs": [{"name": "features", "datatype": "FP32", "shape": [-1, 4]}],
            "outputs": [{"name": "probabilities", "datatype": "FP32", "shape": [-1, 3], "labels": LABELS}],
        },
    )
    model = load_model(path)
    assert model.info["signature"].endswith("animals.signature.json")
    x = rows()
    with serving(model) as client:
        outputs = v2(client, "animals", {"features": x})
        answer = friendly(client, "animals", {"features": x})
    np.testing.assert_array_equal(outputs["probabilities"], expected(trained, x))
    want = expected(trained, x)
    np.testing.assert_array_equal(probabilities(answer, LABELS, key="prediction").astype(np.float32), want)
    sidecar(path, {"inputs": [{"name": "a", "shape": [-1, 4]}, {"name": "b", "shape": [-1, 4]}]})
    with pytest.raises(ModelLoadError, match=r"declares 2 inputs, the program takes 1 \(x\)"):
        load_model(path)


@pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")
def test_scripted_module_needs_and_uses_a_sidecar(tmp_path: Path, trained: Classifier) -> None:
    path = tmp_path / "scripted.pt"
    torch.jit.save(torch.jit.script(trained), path)
    with pytest.raises(ModelLoadError, match=r"scripted\.signature\.json") as err:
        load_model(path)
    message = str(err.value)
    assert "\n" not in message
    assert "is a scripted TorchScript module" in message and "(x)" in message and "torch.jit.trace" in message
    sidecar(
        path,
        {
            "inputs": [{"name": "features", "datatype": "FP32", "shape": [-1, 4]}],
            "outputs": [{"name": "probabilities", "datatype": "FP32", "shape": [-1, 3], "labels": LABELS}],
        },
    )
    model = load_model(path)
    assert model.info["format"] == "torchscript" and model.info["trust"].startswith("not needed")
    x = rows()
    with serving(model) as client:
        outputs = v2(client, "scripted", {"features": x})
    np.testing.assert_array_equal(outputs["probabilities"], expected(trained, x))


@pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")
def test_the_cli_refuses_a_scripted_module_in_one_line(
    tmp_path: Path, trained: Classifier, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "scripted.pt"
    torch.jit.save(torch.jit.script(trained), path)
    assert main(["inspect", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is a scripted TorchScript module" in err and "scripted.signature.json" in err


@pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")
def test_traced_without_its_example_inputs_needs_a_sidecar(tmp_path: Path, trained: Classifier) -> None:
    path = tmp_path / "bare.pt"
    torch.jit.save(torch.jit.trace(trained, torch.randn(2, 4), _store_inputs=False), path)
    with pytest.raises(ModelLoadError, match=r"_store_inputs=False.*bare\.signature\.json"):
        load_model(path)


def test_pickled_module_needs_trust(tmp_path: Path, trained: Classifier) -> None:
    path = tmp_path / "pickled.pt"
    torch.save(trained, path)
    sidecar(path, {"inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 4]}]})
    with pytest.raises(UntrustedModel, match="--trust-pickle"):
        load_model(path)
    model = load_model(path, trust=Trust(trust_pickle=True))
    assert model.info["trust"] == "--trust-pickle"
    x = rows()
    np.testing.assert_array_equal(model.predict({"x": x})["output"], expected(trained, x))


def test_pt2_that_would_unpickle_needs_trust(tmp_path: Path, exported: Path) -> None:
    tampered = tmp_path / "tampered.pt2"
    with zipfile.ZipFile(exported) as src, zipfile.ZipFile(tampered, "w") as dst:
        for item in src.infolist():
            data = src.read(item.filename)
            if item.filename.endswith("weights_config.json"):
                data = data.replace(b'"use_pickle": false', b'"use_pickle": true')
            dst.writestr(item, data)
    with pytest.raises(UntrustedModel, match="pickles"):
        load_model(tampered)


def test_cuda_without_cuda_is_a_one_line_error(exported: Path, capsys: pytest.CaptureFixture[str]) -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA; the error path needs a machine without it")
    assert main(["inspect", str(exported), "--device", "cuda"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--device cuda" in err and "CUDA is not available" in err


def test_missing_extra_names_the_pip_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "m.pt2").write_bytes(b"")
    monkeypatch.setitem(sys.modules, "torch", None)
    with pytest.raises(ModelLoadError, match=r"pip install 'modelapi\[torch\]'"):
        load_model(tmp_path / "m.pt2")
