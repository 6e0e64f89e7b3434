"""The core imports nothing from Starlette: any front end (HTTP, gRPC, the job runner, ``predict`` in process)
can use the data plane and the repository without the web framework."""

from __future__ import annotations

import subprocess
import sys

CORE = (
    "modelapi.dataplane",
    "modelapi.repository.registry",
    "modelapi.repository.handle",
    "modelapi.repository.sources",
    "modelapi.repository.layout",
    "modelapi.repository.config",
    "modelapi.repository.shared",
    "modelapi.repository.watch",
    "modelapi.batching",
    "modelapi.context",
    "modelapi.events",
    "modelapi.gate",
)


def test_the_core_does_not_import_starlette() -> None:
    code = (
        "import importlib, sys\n"
        f"for name in {CORE!r}:\n"
        "    importlib.import_module(name)\n"
        "loaded = sorted(m for m in sys.modules if m == 'starlette' or m.startswith('starlette.'))\n"
        "print(','.join(loaded))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == "", f"the core imported {out.stdout.strip()}"


def test_the_app_and_the_cli_do_not_import_scipy_or_grpc() -> None:
    """scipy.stats (the monitor's p-values, ~0.7 s to import) and grpc (``--grpc-port`` only) load when used, not
    on every worker start or ``modelapi --help``."""
    code = (
        "import sys, modelapi.cli, modelapi.http.app\n"
        "print(','.join(sorted(m for m in sys.modules if m.split('.')[0] in ('scipy', 'grpc'))))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == "", f"imported at start: {out.stdout.strip()[:200]}"
