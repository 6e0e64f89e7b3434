"""API keys against the real server: keys made with the CLI, revoked while it runs, jobs owned by keys."""

from __future__ import annotations

import time
from pathlib import Path

import httpx

from helpers.keys import cli, cli_create_key

from .server import serve

ROW = {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_keys_revoked_while_the_server_runs_stop_working_on_every_worker(tmp_path: Path) -> None:
    state = tmp_path / "state"
    key = cli_create_key(state)  # a key in the store: loopback turns authentication on
    other = cli_create_key(state, "--models", "digits")
    with serve("--state-dir", str(state), "--workers", "2", tmp_dir=tmp_path, timeout=90) as server:
        r = httpx.post(server.url + "/predict", json=ROW)
        assert r.status_code == 401 and r.headers["www-authenticate"] == 'Bearer realm="modelapi"'
        assert httpx.get(server.url + "/v2/health/ready").status_code == 200  # probes need no key
        r = httpx.post(server.url + "/predict", json=ROW, headers=bearer(key))
        assert r.status_code == 200 and r.json()["prediction"] == "setosa"
        assert (
            httpx.post(server.url + "/v2/models/iris/infer", json={}, headers={"X-API-Key": other}).status_code == 404
        )
        assert httpx.get(server.url + f"/models?api_key={key}").status_code == 401
        log = server.log_with(f"{key.rsplit('_', 1)[0]}_<redacted>")
        assert key.rsplit("_", 1)[1] not in log  # the access log keeps the key id, never the secret
        assert f"{key.rsplit('_', 1)[0]}_<redacted>" in log

        for _ in range(40):  # new connections, so both workers answer
            r = httpx.get(server.url + "/models", headers={**bearer(key), "connection": "close"})
            assert r.status_code == 200
        pids = set(server.worker_pids())
        assert len(pids) == 2

        done = cli("keys", "revoke", key.rsplit("_", 1)[0], "--state-dir", str(state))
        assert done.returncode == 0, done.stderr
        revoked = time.monotonic()
        while httpx.get(server.url + "/models", headers=bearer(key)).status_code != 401:
            assert time.monotonic() - revoked < 1.0, "a revoked key still works 1 s on"  # issue 13's bound
            time.sleep(0.02)
        time.sleep(0.6)  # past key_cache_s (0.5 s) from any lookup made before the revocation, on either worker
        codes = {httpx.get(server.url + "/models", headers={**bearer(key), "connection": "close"}).status_code
                 for _ in range(40)}  # fmt: skip
        assert codes == {401}
        assert set(server.worker_pids()) == pids  # no restart was needed


def test_a_key_sees_only_its_own_jobs(tmp_path: Path) -> None:
    state = tmp_path / "state"
    alice, bob = cli_create_key(state), cli_create_key(state)
    admin = cli_create_key(state, "--scope", "admin")
    with (
        serve("--state-dir", str(state), tmp_dir=tmp_path, timeout=90) as server,
        httpx.Client(base_url=server.url) as http,
    ):
        assert http.post("/models/iris/jobs", json=[ROW, ROW]).status_code == 401
        r = http.post("/models/iris/jobs", json=[ROW, ROW], headers=bearer(alice))
        assert r.status_code == 202, r.text
        location = r.headers["location"]
        deadline = time.monotonic() + 30
        while (body := http.get(location, headers=bearer(alice)).json())["status"] != "succeeded":
            assert time.monotonic() < deadline and body["status"] in ("queued", "running"), body
            time.sleep(0.05)
        for method, path in [("GET", location), ("GET", location + "/result"), ("DELETE", location)]:
            r = http.request(method, path, headers=bearer(bob))
            assert r.status_code == 404, (method, path, r.text)
        assert http.get(location + "/result", headers=bearer(alice)).status_code == 200
        assert http.get(location, headers=bearer(admin)).status_code == 200  # an admin key sees every job


def test_turning_authentication_off_on_a_public_address_needs_the_insecure_flag(tmp_path: Path) -> None:
    done = cli("serve", "--host", "0.0.0.0", "--port", "0", "--auth", "off", "--state-dir", str(tmp_path))
    assert done.returncode == 2
    assert "--insecure-no-auth" in done.stderr and "Traceback" not in done.stderr
