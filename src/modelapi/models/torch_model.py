"""PyTorch models: TorchScript (``torch.jit.save``, ``.pt``) and ``torch.export`` programs (``.pt2``).

Neither format runs Python code on load, so neither needs trust, with two exceptions checked before loading:
a ``.pt2`` archive whose weights, constants or sample inputs are pickled, and a ``.pt``/``.pth`` file written
by ``torch.save(module)`` (a pickle). Both load only with ``--trust-pickle`` or a matching ``--sha256``; a
pickled module, like a scripted TorchScript module, needs a signature sidecar (``torch_signature.py``); a traced
TorchScript module and an exported program record their inputs, so the sidecar is optional for them.

Inference runs under ``torch.inference_mode()`` on the device asked for (``--device``; CPU by default).
"""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from ..errors import ModelLoadError
from ..signature import Signature, TensorSpec
from .base import Model
from .torch_signature import exported_signature, merge, read_sidecar, sidecar_path, traced_signature
from .trust import Trust

INSTALL = "PyTorch models need torch: pip install 'modelapi[torch]'"
SUFFIXES = (".pt", ".pth", ".pt2")


class TorchModel(Model):
    platform: ClassVar[str] = "pytorch"

    def __init__(self, module: Any, signature: Signature, device: Any, info: dict[str, Any]) -> None:
        self.module = module
        self.signature = signature
        self.device = device
        self.info = {**info, "device": str(device)}

    def predict(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        import torch

        args = [_tensor(inputs[s.name], self.device) for s in self.signature.inputs]
        with torch.inference_mode():
            result = self.module(*args)
        if isinstance(result, Mapping):
            result = [result[s.name] for s in self.signature.outputs]
        elif not isinstance(result, list | tuple):
            result = [result]
        if len(result) != len(self.signature.outputs):
            raise ValueError(f"the model returned {len(result)} tensors for {len(self.signature.outputs)} outputs")
        return {s.name: t.detach().cpu().numpy() for s, t in zip(self.signature.outputs, result, strict=True)}


def _tensor(array: np.ndarray, device: Any) -> Any:
    """``array`` as a tensor on ``device``, sharing its memory where it may: one copy when it is read-only (a V2
    binary request's tensor views the request's bytes), since a module may write its input in place and
    ``torch.from_numpy`` warns on such memory. ``torch.tensor`` makes that copy on the device itself, so off the
    CPU the bytes are copied once (host to device), not first into a host array too."""
    import torch

    array = np.ascontiguousarray(array)
    if array.flags.writeable:
        return torch.from_numpy(array).to(device)
    return torch.tensor(array, device=device)


def resolve_device(device: str) -> Any:
    """``cpu``, ``cuda`` or ``cuda:N`` as a torch device; a clear error when CUDA is asked for but absent."""
    import torch

    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError):
        raise ModelLoadError(f"--device {device!r} is not a torch device; use cpu, cuda or cuda:N") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ModelLoadError(
                f"--device {device} was asked for, but CUDA is not available to torch {torch.__version__} on this "
                "machine (torch.cuda.is_available() is false); use --device cpu or install a CUDA build of torch"
            )
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ModelLoadError(f"--device {device}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    elif dev.type != "cpu":
        raise ModelLoadError(f"--device {device!r} is not supported; use cpu, cuda or cuda:N")
    return dev


def load_torch(path: Path, trust: Trust, device: str = "cpu") -> TorchModel:
    try:
        import torch  # noqa: F401
    except ImportError:
        raise ModelLoadError(INSTALL) from None
    dev = resolve_device(device)
    if path.suffix.lower() == ".pt2":
        return _load_exported(path, trust, dev)
    kind = _archive_kind(path)
    if kind != "pickle":
        return _load_script(path, dev, traced=kind == "traced")
    return _load_pickled(path, trust, dev)


def _names(path: Path) -> list[str]:
    try:
        with zipfile.ZipFile(path) as zf:
            return zf.namelist()
    except (zipfile.BadZipFile, OSError):
        return []


def _archive_kind(path: Path) -> str:
    names = _names(path)
    if any(n.endswith("/constants.pkl") for n in names) and any("/code/" in n for n in names):
        # torch.jit.trace stores its example inputs (unless _store_inputs=False); torch.jit.script has none
        return "traced" if any(n.endswith("/traced_inputs.pkl") for n in names) else "torchscript"
    return "pickle"


def _load_script(path: Path, dev: Any, traced: bool) -> TorchModel:
    import torch

    try:
        # _restore_shapes puts the stored example inputs' dtypes and shapes on the graph's inputs
        module = torch.jit.load(str(path), map_location=dev, _restore_shapes=traced)  # type: ignore[no-untyped-call]
    except Exception as exc:
        raise ModelLoadError(f"cannot load {path} as TorchScript: {_first_line(exc)}") from exc
    module.eval()
    declared = read_sidecar(path)
    sidecar = sidecar_path(path)
    info: dict[str, Any] = {"source": str(path), "trust": "not needed (TorchScript)"}
    if traced:
        try:
            found = traced_signature(module, dev)
        except ModelLoadError as exc:
            raise ModelLoadError(f"{path}: {exc}") from exc
        signature = merge(found, declared, sidecar)
        source = str(sidecar) if declared is not None else "the traced example inputs"
        return TorchModel(module, signature, dev, {"format": "torchscript (traced)", **info, "signature": source})
    args = [a.name for a in module.forward.schema.arguments][1:]  # skip self
    if declared is None:
        example = {"inputs": [{"name": a, "datatype": "FP32", "shape": [-1, 4]} for a in args]}
        raise ModelLoadError(
            f"{path} is a scripted TorchScript module (torch.jit.script; or traced with _store_inputs=False): "
            f"it records the input names ({', '.join(args)}) but not their dtypes and shapes; declare them in "
            f"{sidecar}, e.g. {json.dumps(example)}, or save the module with torch.jit.trace, which records its "
            "example inputs"
        )
    if len(declared.inputs) != len(args):
        raise ModelLoadError(f"{sidecar}: declares {len(declared.inputs)} inputs, forward() takes {len(args)}")
    info.update(format="torchscript", signature=str(sidecar))
    return TorchModel(module, _default_outputs(declared), dev, info)


def _load_exported(path: Path, trust: Trust, dev: Any) -> TorchModel:
    import torch

    pickled = _pickled_parts(path)
    info: dict[str, Any] = {"format": "torch.export", "source": str(path), "trust": "not needed (torch.export)"}
    if pickled:
        with open(path, "rb") as fh:
            digest = trust.check_pickle_file(fh, f"{path} (it pickles {pickled})")
        info.update(sha256=digest, trust=trust.describe(digest))
    try:
        program = torch.export.load(str(path))
    except Exception as exc:
        raise ModelLoadError(f"cannot load {path} as a torch.export program: {_first_line(exc)}") from exc
    declared = read_sidecar(path)
    signature = merge(exported_signature(program), declared, sidecar_path(path))
    if declared is not None:
        info["signature"] = str(sidecar_path(path))
    module = program.module()
    module.to(dev)
    return TorchModel(module, signature, dev, info)


def _pickled_parts(path: Path) -> str:
    """What a ``.pt2`` archive would unpickle on load ('' when nothing): torch falls back to full pickle there."""
    import torch

    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise ModelLoadError(f"cannot read {path} as a torch.export archive: {exc}") from exc
    with zf:
        for name in zf.namelist():
            if name.endswith(("weights_config.json", "constants_config.json")):
                config = json.loads(zf.read(name)).get("config", {})
                for key, meta in config.items():
                    if meta.get("use_pickle") or not str(meta.get("path_name", "")).startswith(("weight_", "tensor_")):
                        return f"'{key}'"
            elif name.endswith(".pt") and ("/data/weights/" in name or "/data/constants/" in name):
                return "legacy weights"
            elif "/data/sample_inputs/" in name:
                try:
                    torch.load(io.BytesIO(zf.read(name)), weights_only=True)
                except Exception:
                    return "its sample inputs"
    return ""


def _load_pickled(path: Path, trust: Trust, dev: Any) -> TorchModel:
    import torch

    signature = read_sidecar(path)
    with open(path, "rb") as fh:
        digest = trust.check_pickle_file(fh, path)
        if signature is None:
            raise ModelLoadError(
                f"{path} is a pickled PyTorch module (torch.save), which records no signature; declare its inputs "
                f"and outputs in {sidecar_path(path)}, or save it with torch.jit.save or torch.export instead"
            )
        fh.seek(0)
        try:
            module = torch.load(fh, map_location=dev, weights_only=False)
        except Exception as exc:
            raise ModelLoadError(f"cannot load {path} with torch.load: {_first_line(exc)}") from exc
    if not isinstance(module, torch.nn.Module):
        raise ModelLoadError(
            f"{path} holds a {type(module).__name__}, not a torch.nn.Module (a state_dict holds only weights); "
            "save the model with torch.jit.save or torch.export"
        )
    module.eval()
    info = {"format": "torch.save (pickle)", "source": str(path), "sha256": digest, "trust": trust.describe(digest)}
    return TorchModel(module, _default_outputs(signature), dev, info)


def _default_outputs(signature: Signature) -> Signature:
    if signature.outputs:
        return signature
    return Signature(signature.inputs, (TensorSpec("output", "FP32", (-1, -1)),))


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
