"""Part B of the scaling bench (issue 16, item 4): adaptive batching of a convolutional network on a GPU.

The model is a ResNet-18-style network built here (``resnet``; seeded random weights, nothing downloaded) for one
``IMAGE_SHAPE`` FP32 image per request, saved as traced TorchScript with its signature sidecar and served with
``--device cuda`` twice: with adaptive batching (the default) and with ``--no-batching``. Each request carries
one image as V2 binary (Triton's binary tensor extension, ``workload.v2_binary``) and asks for its outputs in
binary.

Before a server is timed, its metadata must give the input as ``[-1, 3, 64, 64]``, and its answers must match the
saved model's on the CPU within ``RTOL`` for one image, for ``MULTI`` images in one request, and for a burst of
``BURST`` concurrent one-image requests, each a different image (how many batches the server ran them in is
logged). Then wrk sends the one-image body at ``--cuda-connections`` (64): the table gives req/s, p50, p99,
errors, server CPU per request and the server's mean rows per batch, and a last line the verdict on the issue's
target: batching on at least ``TARGET_RATIO`` times the req/s of batching off, both p99s shown.

At the defaults part B takes about 1.5 minutes on the lent GPU machine: per server about 20 s to start (torch,
CUDA, the model), a second of checks, then 2 s of warm-up and 10 s timed.

``--torch-device cpu`` runs the same on the CPU, to check the harness where there is no GPU; its numbers are not
the target's, and the verdict line says so.
"""

from __future__ import annotations

import http.client
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson

from . import servers, verify, workload
from .cells import CellError, Outcome, Plan, Result, describe, measure, result

if TYPE_CHECKING:
    import torch

MODEL = "cnn"
INFER_PATH = f"/v2/models/{MODEL}/infer"
#: One RGB image of 64x64, FP32 and already normalized: the size of Tiny ImageNet (200 classes), a common
#: small-image classification task, and 48 KiB per request. With ResNet-18's layout (7x7/2 stem and max pool,
#: four stages of two blocks at 16, 8, 4 and 2 pixels) an image costs 0.15 GMAC: alone, it is some 70 small
#: kernel launches that leave a GPU mostly idle, which batching shares among a batch's images. 224x224 (ImageNet's)
#: would send 12x the bytes per request (588 KiB) and make the CPU check of the harness 12x slower.
IMAGE_SHAPE = (3, 64, 64)
CLASSES = 200
#: (channels, blocks) of each stage; every stage after the first halves the height and width (ResNet-18's)
STAGES = ((64, 2), (128, 2), (256, 2), (512, 2))
#: Largest relative difference allowed in any class probability against the CPU model. cuDNN runs FP32
#: convolutions in TF32 by default (a 10-bit mantissa) and picks its algorithms per batch size: rounding every
#: convolution's inputs and weights to TF32 on the CPU moves this network's probabilities by at most 0.6%, while
#: the answers for any two of the ``BURST`` images differ by 88% or more in some class. 5% leaves room for cuDNN's
#: algorithms and still tells a wrong or misplaced image apart.
RTOL = 0.05
BURST = 32  # concurrent one-image requests, each a different image
MULTI = 8  # images in the one multi-image request checked alone
TARGET_RATIO = 20.0  # issue 16, item 4: batching on serves at least this many times the req/s of batching off


def cuda_note(device: str) -> str:
    """Why part B cannot run on ``device`` ('' when it can)."""
    try:
        import torch
    except ImportError:
        return "torch is not installed"
    if device.startswith("cuda") and not torch.cuda.is_available():
        return f"torch {torch.__version__} sees no CUDA device (torch.cuda.is_available() is false)"
    return ""


def resnet() -> torch.nn.Module:
    """ResNet-18's layout for ``IMAGE_SHAPE`` images and ``CLASSES`` classes, seeded, in eval mode.

    With random weights and batch norm's initial statistics (mean 0, variance 1) the activations shrink through
    the depth until every image gets nearly the same, nearly uniform answer (different images' answers then
    differ by about 2%, inside ``RTOL``). So the batch norms first take their statistics from one seeded batch of
    random images, as training would have left them, which keeps the activations at unit scale as in a trained
    network and each image's answer its own.
    """
    import torch
    from torch import nn

    class BasicBlock(nn.Module):
        """conv3x3-BN-ReLU-conv3x3-BN plus the skip (a 1x1 convolution and BN where the shape changes), ReLU."""

        def __init__(self, cin: int, cout: int, stride: int) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(cout)
            self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(cout)
            self.relu = nn.ReLU()
            self.skip: nn.Module = nn.Identity()
            if stride != 1 or cin != cout:
                self.skip = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            out = self.relu(self.bn1(self.conv1(x)))
            out = self.bn2(self.conv2(out))
            return self.relu(out + self.skip(x))  # type: ignore[no-any-return]

    torch.manual_seed(0)
    layers: list[nn.Module] = [
        nn.Conv2d(IMAGE_SHAPE[0], STAGES[0][0], 7, 2, 3, bias=False),
        nn.BatchNorm2d(STAGES[0][0]),
        nn.ReLU(),
        nn.MaxPool2d(3, 2, 1),
    ]
    cin = STAGES[0][0]
    for i, (cout, blocks) in enumerate(STAGES):
        for j in range(blocks):
            layers.append(BasicBlock(cin, cout, 2 if i and not j else 1))
            cin = cout
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, CLASSES), nn.Softmax(dim=1)]
    net = nn.Sequential(*layers)
    for module in net.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.momentum = None  # the plain average of what it sees: here, the one calibration batch
    with torch.no_grad():
        net.train()(torch.randn(BURST, *IMAGE_SHAPE, generator=torch.Generator().manual_seed(1)))
    return net.eval()


def build_cnn(directory: Path) -> tuple[Path, int]:
    """``resnet()`` saved as traced TorchScript with a signature sidecar naming its tensors; its parameter count."""
    import torch

    net = resnet()
    with torch.no_grad():
        traced = torch.jit.trace(net, torch.zeros(2, *IMAGE_SHAPE))  # type: ignore[no-untyped-call]
    path = directory / f"{MODEL}.pt"
    torch.jit.save(traced, str(path))
    signature = {
        "inputs": [{"name": "image", "datatype": "FP32", "shape": [-1, *IMAGE_SHAPE]}],
        "outputs": [{"name": "probabilities", "datatype": "FP32", "shape": [-1, CLASSES]}],
    }
    path.with_name(path.stem + ".signature.json").write_bytes(orjson.dumps(signature))
    return path, sum(p.numel() for p in net.parameters())


def images(n: int) -> np.ndarray:
    """``n`` seeded random images, standing in for normalized ones (mean 0, variance 1 per channel)."""
    return np.random.default_rng(2).standard_normal((n, *IMAGE_SHAPE), dtype=np.float32)


def cnn_reference(path: Path, batch: np.ndarray) -> np.ndarray:
    """What the saved model answers on the CPU for ``batch``."""
    import torch

    module = torch.jit.load(str(path), map_location="cpu")  # type: ignore[no-untyped-call]
    with torch.inference_mode():
        out = module(torch.from_numpy(batch))
    return np.asarray(out.numpy(), dtype=np.float64)


def _get_json(srv: servers.Running, path: str) -> Any:
    conn = http.client.HTTPConnection(srv.host, srv.port, timeout=30)
    try:
        conn.request("GET", path, headers=srv.spec.client_headers)
        resp = conn.getresponse()
        content = resp.read()
    finally:
        conn.close()
    if resp.status != 200:
        raise verify.WrongAnswer(f"GET {path}: HTTP {resp.status}: {content[:300]!r}")
    return orjson.loads(content)


def _rows_and_batches(srv: servers.Running) -> tuple[int, int]:
    """Rows the model has run and in how many batches (each request alone without batching), from Triton's
    statistics extension."""
    stat = _get_json(srv, f"/v2/models/{MODEL}/stats")["model_stats"][0]
    return int(stat["inference_count"]), int(stat["execution_count"])


def _infer(name: str, srv: servers.Running, body: workload.Body) -> np.ndarray:
    status, headers, content = verify.post(srv.host, srv.port, INFER_PATH, body, srv.spec.client_headers)
    if status != 200:
        raise verify.WrongAnswer(f"{name} {INFER_PATH}: HTTP {status}: {content[:300]!r}")
    if "inference-header-content-length" not in headers:
        raise verify.WrongAnswer(f"{name}: asked for binary outputs, got {headers.get('content-type')}")
    try:
        outputs = verify.v2_outputs(headers, content, ("probabilities",))
    except verify.WrongAnswer as exc:
        raise verify.WrongAnswer(f"{name} {INFER_PATH}: {exc}") from None
    return np.asarray(outputs["probabilities"], dtype=np.float64)


def check_cnn(
    name: str, srv: servers.Running, singles: list[workload.Body], multi: workload.Body, want: np.ndarray
) -> tuple[float, int]:
    """The served input shape; one image alone, ``MULTI`` in one request, then a burst of concurrent one-image
    requests (batched together when batching is on). The largest relative difference from ``want``, and how many
    batches the burst ran in."""
    shape = _get_json(srv, f"/v2/models/{MODEL}")["inputs"][0]["shape"]
    if shape != [-1, *IMAGE_SHAPE]:
        raise verify.WrongAnswer(f"{name}: serves the input as {shape}, expected {[-1, *IMAGE_SHAPE]}")
    worst = 0.0

    def compare(where: str, got: np.ndarray, expected: np.ndarray) -> None:
        nonlocal worst
        if got.shape != expected.shape:
            raise verify.WrongAnswer(f"{name} {where}: shape {got.shape}, expected {expected.shape}")
        diff = float(np.max(np.abs(got - expected) / expected))  # softmax: every expected probability is > 0
        if not diff <= RTOL:  # NaN fails too
            raise verify.WrongAnswer(f"{name} {where}: differs from the CPU model by {diff:.2e} (relative) > {RTOL}")
        worst = max(worst, diff)

    compare("1-image request", _infer(name, srv, singles[0]), want[:1])
    compare(f"{MULTI}-image request", _infer(name, srv, multi), want[:MULTI])
    batches = _rows_and_batches(srv)[1]
    with ThreadPoolExecutor(len(singles)) as pool:
        answers = list(pool.map(lambda body: _infer(name, srv, body), singles))
    compare(f"burst of {len(singles)} concurrent 1-image requests", np.concatenate(answers), want[: len(singles)])
    return worst, _rows_and_batches(srv)[1] - batches


def gpu_batching(
    plan: Plan, outcome: Outcome, work: workload.Workload, env: dict[str, str], log_dir: Path, tmp: Path
) -> None:
    """Part B; ``work`` (part A's models and bodies) is not used."""
    note = cuda_note(plan.torch_device)
    if note:
        outcome.cuda_note = f"Part B (batching on {plan.torch_device}) skipped: {note}."
        plan.log(outcome.cuda_note)
        return
    import torch

    outcome.meta["torch"] = f"{torch.__version__} (CUDA {torch.version.cuda})"
    directory = tmp / "torch"
    directory.mkdir()
    model, params = build_cnn(directory)
    batch = images(BURST)
    want = cnn_reference(model, batch)
    singles = [
        workload.v2_binary(directory / f"image-{i}.bin", "image", "FP32", batch[i : i + 1]) for i in range(BURST)
    ]
    multi = workload.v2_binary(directory / f"images-{MULTI}.bin", "image", "FP32", batch[:MULTI])
    described = (
        f"ResNet-18-style CNN ({params:,} parameters, input [-1, {', '.join(map(str, IMAGE_SHAPE))}] FP32, "
        f"{CLASSES} classes, traced TorchScript) on {plan.torch_device}, 1 image per request as V2 binary"
    )
    outcome.meta["part B"] = described
    plan.log(f"{described}: saved; CPU reference computed")
    cells: dict[str, Result] = {}
    for mode, extra in (("on", ()), ("off", ("--no-batching",))):
        spec = servers.modelapi(
            f"modelapi cnn {plan.torch_device} batching {mode}", [model], "--device", plan.torch_device, *extra
        )
        try:
            with servers.serve(
                spec, core=plan.server_cores, env=env, log_dir=log_dir, timeout=plan.ready_timeout
            ) as srv:
                worst, burst = check_cnn(spec.name, srv, singles, multi, want)
                plan.log(
                    f"{spec.name}: answers match the CPU model (largest relative difference {worst:.1e}); "
                    f"the burst of {BURST} ran in {burst} batch(es)"
                )
                before = _rows_and_batches(srv)
                cell, cpu_us = measure(plan, srv, INFER_PATH, singles[0], plan.cuda_connections)
                after = _rows_and_batches(srv)
                rows, batches = after[0] - before[0], after[1] - before[1]
                r = result("B", mode, singles[0], plan.cuda_connections, cell, cpu_us, len(srv.workers()))
                cells[mode] = replace(r, rows_per_batch=rows / batches if batches else None)
                outcome.results.append(cells[mode])
                plan.log(
                    f"{spec.name} 1-image c{plan.cuda_connections}: {cell.rps:,.0f} req/s, "
                    f"p50 {cell.p50_ms:.2f} ms, p99 {cell.p99_ms:.2f} ms, {cell.errors} errors, "
                    f"{rows / max(batches, 1):.1f} rows per batch"
                )
        except CellError as exc:
            outcome.fail(f"{spec.name}: {describe(exc)}")
            plan.log(f"{spec.name}: FAILED: {describe(exc)}")
    outcome.target = verdict(cells.get("on"), cells.get("off"), plan.torch_device)
    plan.log(outcome.target)


def verdict(on: Result | None, off: Result | None, device: str) -> str:
    """One line on the issue's target: PASS or FAIL on CUDA; on another device, the numbers but no judgement."""
    goal = f"batching on serves at least {TARGET_RATIO:g}x the req/s of batching off"
    if on is None or off is None:
        return f"Target ({goal}): FAIL, the batching on and off cells did not both run."
    if not off.rps:  # it ran, but every request failed (or none was answered within the cell): no ratio
        return f"Target ({goal}): FAIL, batching off answered no request within the cell ({off.errors} errors)."
    numbers = (
        f"{on.rps / off.rps:.2f}x ({on.rps:,.0f} against {off.rps:,.0f} req/s); "
        f"p99 {on.p99_ms:.2f} ms on, {off.p99_ms:.2f} ms off"
    )
    if not device.startswith("cuda"):
        return (
            f"Target ({goal}, on CUDA): not judged, since part B ran on {device}, a check of the harness whose "
            f"numbers are not the target's: {numbers}."
        )
    errors = on.errors + off.errors
    passed = on.rps >= TARGET_RATIO * off.rps and not errors
    return f"Target ({goal}): {'PASS' if passed else 'FAIL'}, {numbers}" + (f"; {errors} errors." if errors else ".")


def table_b(outcome: Outcome) -> str:
    if outcome.cuda_note:
        return outcome.cuda_note
    rows = {r.label: r for r in outcome.results if r.part == "B"}
    lines = [
        "| batching | body | connections | req/s | p50 ms | p99 ms | errors | server CPU µs/req | rows/batch |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows.values():
        cpu = f"{r.cpu_us_per_req:,.0f}" if r.cpu_us_per_req is not None else "n/a"
        per_batch = f"{r.rows_per_batch:.1f}" if r.rows_per_batch is not None else "n/a"
        lines.append(
            f"| {r.label} | {r.rows}-image V2 binary | {r.connections} | {r.rps:,.0f} | {r.p50_ms:.2f} | "
            f"{r.p99_ms:.2f} | {r.errors} | {cpu} | {per_batch} |"
        )
    lines.append(
        "\nrows/batch: the server's mean batch size over the warm-up and the timed cell (Triton's statistics)."
    )
    if outcome.target:
        lines.append(outcome.target)
    return "\n".join(lines)
