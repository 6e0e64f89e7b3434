"""The same environment for every contender, and what the harness can learn about the machine and modelapi.

Every contender is pinned to one core, so every thread pool is set to one thread. OPENBLAS_CORETYPE and
OPENBLAS_L2_SIZE (set on some of these machines for old OpenBLAS builds) slow a current numpy, so the bench
unsets both, and reports which BLAS kernel then runs.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from typing import Any

import orjson

THREAD_VARS = (
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "BLIS_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
    "NUMEXPR_NUM_THREADS",
)
UNSET = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")


def bench_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in UNSET and not k.startswith("MODELAPI_")}
    env.update(dict.fromkeys(THREAD_VARS, "1"))
    env["PYTHONUNBUFFERED"] = "1"
    return env


_BLAS_PROBE = """
import json, numpy, sklearn, threadpoolctl
info = [{k: d.get(k) for k in ("internal_api", "version", "architecture", "num_threads")}
        for d in threadpoolctl.threadpool_info()]
print(json.dumps(info))
"""


def blas_info(env: dict[str, str]) -> list[dict[str, Any]]:
    proc = subprocess.run(
        [sys.executable, "-c", _BLAS_PROBE], env=env, capture_output=True, text=True, check=True, timeout=60
    )
    result: list[dict[str, Any]] = orjson.loads(proc.stdout)
    return result


@dataclass(frozen=True)
class Features:
    """What this modelapi offers: worker processes, and how to turn batching off (``None``: it cannot)."""

    workers: bool
    batching_off: tuple[tuple[str, ...], dict[str, str]] | None
    log_predictions: bool = False  # the prediction log (--log-predictions)


def modelapi_features(env: dict[str, str]) -> Features:
    modelapi = os.path.join(os.path.dirname(sys.executable), "modelapi")
    help_text = subprocess.run(
        [modelapi, "serve", "--help"], env=env, capture_output=True, text=True, check=True, timeout=60
    ).stdout
    fields = _settings_fields(env)
    off: tuple[tuple[str, ...], dict[str, str]] | None = None
    if "--no-batching" in help_text:
        off = (("--no-batching",), {})
    elif "batching" in fields:
        off = ((), {"MODELAPI_BATCHING": "false"})
    return Features(
        workers="--workers" in help_text, batching_off=off, log_predictions="--log-predictions" in help_text
    )


def _settings_fields(env: dict[str, str]) -> set[str]:
    probe = "import json; from modelapi.settings import Settings; print(json.dumps(list(Settings.model_fields)))"
    proc = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=60)
    return set(orjson.loads(proc.stdout)) if proc.returncode == 0 else set()
