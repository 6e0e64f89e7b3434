"""Part B of the scaling bench: adaptive batching on a GPU, where torch sees CUDA.

A TorchScript MLP (20 -> 256 -> 256 -> 3) served with ``--device cuda``, with adaptive batching on and with
``--no-batching``, 64 connections, 1-row friendly JSON. The server's answers must match the model's own on the
CPU within 1e-4, for a lone request and for a burst of concurrent ones.
"""

from __future__ import annotations

import http.client
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from . import servers, verify, workload
from .cells import ROW_COUNTS, CellError, Outcome, Plan, describe, measure, result

MLP_PATH = "/models/mlp/predict"
MLP_LAYERS = (workload.N_FEATURES, 256, 256, 3)
GPU_TOLERANCE = 1e-4
BURST = 32  # concurrent 1-row requests, each a different row, checked on the batching server


def cuda_note(device: str) -> str:
    """Why part B cannot run on ``device`` ('' when it can)."""
    try:
        import torch
    except ImportError:
        return "torch is not installed"
    if device.startswith("cuda") and not torch.cuda.is_available():
        return f"torch {torch.__version__} sees no CUDA device (torch.cuda.is_available() is false)"
    return ""


def build_mlp(directory: Path) -> Path:
    """A seeded float32 MLP with a softmax head, saved as TorchScript with its signature sidecar."""
    import torch

    torch.manual_seed(0)
    a, b, c, d = MLP_LAYERS
    layers = [torch.nn.Linear(a, b), torch.nn.ReLU(), torch.nn.Linear(b, c), torch.nn.ReLU(), torch.nn.Linear(c, d)]
    net = torch.nn.Sequential(*layers, torch.nn.Softmax(dim=1)).eval()
    with torch.no_grad():
        scripted = torch.jit.trace(net, torch.zeros(4, a))  # type: ignore[no-untyped-call]
    path = directory / "mlp.pt"
    torch.jit.save(scripted, str(path))
    signature = {
        "inputs": [{"name": "input", "datatype": "FP32", "shape": [-1, a]}],
        "outputs": [{"name": "probabilities", "datatype": "FP32", "shape": [-1, d]}],
    }
    path.with_name(path.stem + ".signature.json").write_bytes(orjson.dumps(signature))
    return path


def mlp_reference(path: Path, rows: np.ndarray) -> np.ndarray:
    """What the saved model answers on the CPU for ``rows`` (sent as JSON, taken as float32 by the server)."""
    import torch

    module = torch.jit.load(str(path), map_location="cpu")  # type: ignore[no-untyped-call]
    with torch.inference_mode():
        out = module(torch.from_numpy(np.ascontiguousarray(rows, dtype=np.float32)))
    return np.asarray(out.numpy(), dtype=np.float64)


def _post_json(host: str, port: int, data: bytes) -> np.ndarray:
    conn = http.client.HTTPConnection(host, port, timeout=60)
    try:
        conn.request("POST", MLP_PATH, body=data, headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        content = resp.read()
        if resp.status != 200:
            raise verify.WrongAnswer(f"{MLP_PATH}: HTTP {resp.status}: {content[:300]!r}")
    finally:
        conn.close()
    answer = orjson.loads(content)
    preds: list[dict[str, Any]] = answer.get("predictions", [answer])
    return np.asarray([p["prediction"] for p in preds], dtype=np.float64)


def check_mlp(name: str, srv: servers.Running, bodies: list[workload.Body], rows: np.ndarray, want: np.ndarray) -> None:
    """Each body alone, then a burst of concurrent 1-row requests (batched together when batching is on)."""

    def compare(where: str, got: np.ndarray, expected: np.ndarray) -> None:
        if got.shape != expected.shape:
            raise verify.WrongAnswer(f"{name} {where}: shape {got.shape}, expected {expected.shape}")
        diff = float(np.max(np.abs(got - expected)))
        if diff > GPU_TOLERANCE:
            raise verify.WrongAnswer(f"{name} {where}: differs from the CPU model by {diff:.2e} > {GPU_TOLERANCE}")

    for body in bodies:
        compare(f"{body.rows}-row body", _post_json(srv.host, srv.port, body.data()), want[: body.rows])
    singles = [workload.rest_json(rows[i : i + 1]) for i in range(min(BURST, len(rows)))]
    with ThreadPoolExecutor(len(singles)) as pool:
        answers = list(pool.map(lambda data: _post_json(srv.host, srv.port, data), singles))
    compare(f"burst of {len(singles)} concurrent 1-row requests", np.concatenate(answers), want[: len(singles)])


def gpu_batching(
    plan: Plan, outcome: Outcome, work: workload.Workload, env: dict[str, str], log_dir: Path, tmp: Path
) -> None:
    note = cuda_note(plan.torch_device)
    if note:
        outcome.cuda_note = f"Part B (batching on {plan.torch_device}) skipped: {note}."
        plan.log(outcome.cuda_note)
        return
    import torch

    outcome.meta["torch"] = f"{torch.__version__} (CUDA {torch.version.cuda})"
    directory = tmp / "torch"
    directory.mkdir()
    model = build_mlp(directory)
    rows = work.rows  # the friendly JSON bodies of part A hold the first 1 and 32 of these
    want = mlp_reference(model, rows)
    bodies = [work.body("rest", n) for n in ROW_COUNTS]
    plan.log(f"MLP {' -> '.join(map(str, MLP_LAYERS))} saved as TorchScript; CPU reference computed")
    for mode, extra in (("on", ()), ("off", ("--no-batching",))):
        spec = servers.modelapi(
            f"modelapi mlp {plan.torch_device} batching {mode}", [model], "--device", plan.torch_device, *extra
        )
        try:
            with servers.serve(
                spec, core=plan.server_cores, env=env, log_dir=log_dir, timeout=plan.ready_timeout
            ) as srv:
                check_mlp(spec.name, srv, bodies, rows, want)
                plan.log(f"{spec.name}: answers match the CPU model within {GPU_TOLERANCE}")
                cell, cpu_us = measure(plan, srv, MLP_PATH, bodies[0], plan.cuda_connections)
                outcome.results.append(
                    result("B", mode, bodies[0], plan.cuda_connections, cell, cpu_us, len(srv.workers()))
                )
                plan.log(
                    f"{spec.name} 1-row c{plan.cuda_connections}: {cell.rps:,.0f} req/s, "
                    f"p50 {cell.p50_ms:.2f} ms, p99 {cell.p99_ms:.2f} ms, {cell.errors} errors"
                )
        except CellError as exc:
            outcome.fail(f"{spec.name}: {describe(exc)}")
            plan.log(f"{spec.name}: FAILED: {describe(exc)}")


def table_b(outcome: Outcome) -> str:
    if outcome.cuda_note:
        return outcome.cuda_note
    rows = {r.label: r for r in outcome.results if r.part == "B"}
    lines = [
        "| batching | body | connections | req/s | p50 ms | p99 ms | errors | server CPU µs/req |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows.values():
        cpu = f"{r.cpu_us_per_req:,.0f}" if r.cpu_us_per_req is not None else "n/a"
        lines.append(
            f"| {r.label} | {r.rows}-row JSON | {r.connections} | {r.rps:,.0f} | {r.p50_ms:.2f} | {r.p99_ms:.2f} | "
            f"{r.errors} | {cpu} |"
        )
    on, off = rows.get("on"), rows.get("off")
    if on and off and off.rps:
        lines.append(f"\nBatching on / off: {on.rps / off.rps:.2f}x req/s; p99 {on.p99_ms:.2f} vs {off.p99_ms:.2f} ms.")
    return "\n".join(lines)
