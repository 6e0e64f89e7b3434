"""Make API keys in tests: ``create_key`` for in-process apps, ``cli_create_key`` for a real server.

Usage (e.g. a fuzzing test that needs a key)::

    from helpers.keys import cli_create_key
    key = cli_create_key(tmp_path)                                 # then: serve("--state-dir", str(tmp_path), ...)
    httpx.get(url, headers={"Authorization": f"Bearer {key}"})
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from modelapi.security.key_limits import parse_limits
from modelapi.security.keys import KeyStore


def create_key(
    state_dir: Path,
    name: str = "test",
    *,
    scope: str = "predict",
    models: list[str] | None = None,
    expires_at: float | None = None,
    database_url: str | None = None,
    limits: tuple[str, ...] = (),
) -> str:
    """A new key in the store of ``state_dir`` (or ``database_url``); returns the key itself. ``limits``: rate
    limits and quotas as ``keys create --rate`` takes them (``"100/min"``, ``"5000rows/day"``)."""
    store = KeyStore.open(state_dir, database_url)
    try:
        key, _ = store.create(
            name,
            frozenset({scope}),
            frozenset(models) if models is not None else None,
            expires_at,
            parse_limits(("--rate", spec) for spec in limits),
        )
    finally:
        store.close()
    return key


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``python -m modelapi ARGS`` in a new process."""
    return subprocess.run(
        [sys.executable, "-m", "modelapi", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
    )


def cli_create_key(state_dir: Path, *args: str) -> str:
    """``modelapi keys create --state-dir DIR --name test ARGS`` as an operator runs it; returns the key."""
    done = cli("keys", "create", "--state-dir", str(state_dir), "--name", "test", *args)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()
