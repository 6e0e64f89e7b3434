"""The Dockerfile builds an image that serves a prediction, run as the Kubernetes manifests run it: read-only
root filesystem, writable tmpfs for /tmp and the state dir, no capabilities, no privilege escalation, the
model mounted read-only, a key from the container's own key store. Needs a container engine that runs and can
pull the base image; where there is none the skip says which (this one is not forced in CI: CI machines may
have no engine and no registry access)."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from modelapi.demo import DEMO_MODEL_PATH

from .tools import ROOT

BASE = next(line.split()[1] for line in (ROOT / "Dockerfile").read_text().splitlines() if line.startswith("FROM "))


def _engine() -> str:
    found = [e for e in ("docker", "podman") if shutil.which(e)]
    if not found:
        pytest.skip("no container engine here: neither docker nor podman is installed")
    reasons = []
    for engine in found:
        run = subprocess.run([engine, "info"], capture_output=True, text=True, timeout=30, check=False)
        if run.returncode == 0:
            return engine
        last = (run.stderr.strip().splitlines() or ["no output"])[-1]
        reasons.append(f"{engine} is installed but `{engine} info` fails ({last})")
    pytest.skip("no container engine runs here: " + "; ".join(reasons))


def _run(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), capture_output=True, text=True, timeout=timeout, check=False)


@pytest.fixture(scope="module")
def image() -> Iterator[tuple[str, str]]:
    engine = _engine()
    pulled = _run(engine, "pull", BASE, timeout=600)
    if pulled.returncode != 0:
        last = (pulled.stderr.strip().splitlines() or ["no output"])[-1]
        pytest.skip(f"the base image {BASE} cannot be pulled (no registry access?): {last}")
    tag = f"modelapi-test:{uuid.uuid4().hex[:12]}"
    built = _run(engine, "build", "--tag", tag, str(ROOT), timeout=1800)
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    try:
        yield engine, tag
    finally:
        _run(engine, "rmi", "--force", tag)


def test_the_image_serves_a_prediction_locked_down(image: tuple[str, str], tmp_path: Path) -> None:
    engine, tag = image
    models = tmp_path / "models"
    models.mkdir()
    shutil.copy(DEMO_MODEL_PATH, models / "iris.skops")
    shutil.copy(DEMO_MODEL_PATH.with_name("iris.examples.json"), models / "iris.examples.json")
    models.chmod(0o755)
    name = f"modelapi-test-{uuid.uuid4().hex[:8]}"
    started = _run(
        engine, "run", "--detach", "--name", name, "--publish", "127.0.0.1::8080",
        "--read-only", "--tmpfs", "/tmp", "--tmpfs", "/var/lib/modelapi:uid=10001,gid=0,mode=0700",
        "--cap-drop", "ALL", "--security-opt", "no-new-privileges",
        "--volume", f"{models}:/models:ro", tag,
        "serve", "/models", "--host", "0.0.0.0", "--port", "8080",
    )  # fmt: skip
    assert started.returncode == 0, started.stderr
    try:
        port = _run(engine, "port", name, "8080/tcp").stdout.strip().splitlines()[0].rsplit(":", 1)[1]
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"{url}/v2/health/ready", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, _run(engine, "logs", name).stdout[-3000:]
            time.sleep(0.5)
        # bound to 0.0.0.0, authentication is on: a key from the container's own store
        created = _run(engine, "exec", name, "modelapi", "keys", "create", "--name", "test", "--json")
        assert created.returncode == 0, created.stderr
        key = json.loads(created.stdout)["key"]
        row = {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}
        assert httpx.post(f"{url}/models/iris/predict", json=row, timeout=10).status_code == 401
        answer = httpx.post(
            f"{url}/models/iris/predict", json=row, headers={"Authorization": f"Bearer {key}"}, timeout=10
        )
        assert answer.status_code == 200, answer.text
        assert answer.json()["prediction"] == "setosa"
        # the image's HEALTHCHECK reaches the live route from inside
        deadline = time.monotonic() + 60
        while (health := _run(engine, "inspect", "--format", "{{.State.Health.Status}}", name).stdout.strip()) in (
            "starting",
            "",
        ):
            assert time.monotonic() < deadline
            time.sleep(1)
        assert health == "healthy"
        user = _run(engine, "exec", name, "id", "-u").stdout.strip()
        assert user == "10001"
    finally:
        _run(engine, "rm", "--force", name)
