"""The real server, started as a user starts it, spoken to over HTTP on loopback."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from helpers.keys import cli_create_key
from helpers.ports import free_port

from .server import serve


def require_tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{name} is required in CI (.ci/run installs it)")
        pytest.skip(f"{name} is not installed")
    return path


def test_demo_model_end_to_end(tmp_path: Path) -> None:
    with serve(tmp_dir=tmp_path) as server, httpx.Client(base_url=server.url) as http:
        r = http.post(
            "/predict", json={"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}
        )
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["prediction"] == "setosa"
        assert set(body["probabilities"]) == {"setosa", "versicolor", "virginica"}
        assert abs(sum(body["probabilities"].values()) - 1) < 1e-9

        r = http.get(
            "/predict", params={"sepal_length": "6.3", "sepal_width": "-3.3", "petal_length": "6", "petal_width": "2.5"}
        )
        assert r.status_code == 200, r.text

        r = http.get("/v2/models/iris")
        assert r.status_code == 200
        assert [i["name"] for i in r.json()["inputs"]] == ["sepal_length", "sepal_width", "petal_length", "petal_width"]
        assert http.get("/openapi.json").status_code == 200
        assert http.get("/docs").status_code == 200

        r = http.post("/predict", content=b"{not json", headers={"content-type": "application/json"})
        assert r.status_code == 400
        assert r.headers["content-type"].startswith("application/problem+json")
        r = http.get("/no/such/route")
        assert r.status_code == 404
        assert r.json()["status"] == 404


def test_the_helper_starts_the_server_on_another_port_when_its_port_was_taken(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A port picked free may be taken before the server binds it (another test's sockets): the server exits with
    "Address already in use", and the helper tries another port instead of failing the test."""
    from . import server as helper

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        picks = iter([port])
        monkeypatch.setattr(helper, "free_port", lambda: next(picks, None) or free_port())
        with helper.serve(tmp_dir=tmp_path, until="/v2/health/live") as server:
            assert not server.url.endswith(f":{port}")
            assert httpx.get(server.url + "/v2/health/live").status_code == 200
        assert "Address already in use" in (tmp_path / f"modelapi-server-{port}.log").read_text()


def test_the_session_helper_starts_the_server_on_another_port_when_its_port_was_taken(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same for ``serve_in_session`` (tests that kill the server's whole group): a port it picked and found
    taken is given up for another; a port the test asked for is not."""
    from helpers import server_process

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        picks = iter([port])
        monkeypatch.setattr(server_process, "free_port", lambda: next(picks, None) or free_port())
        with server_process.serve_in_session(tmp_dir=tmp_path) as server:
            assert server.port != port
            assert httpx.get(server.url + "/v2/health/live").status_code == 200
        logs = [p.read_text() for p in tmp_path.glob(f"modelapi-server-{port}-*.log")]
        assert len(logs) == 1 and "Address already in use" in logs[0]
        asked = server_process.serve_in_session(tmp_dir=tmp_path, port=port)
        with pytest.raises(RuntimeError, match="Address already in use"), asked:
            pass


def test_banner_shows_url_docs_and_a_curl_example_that_works(tmp_path: Path) -> None:
    curl = require_tool("curl")
    with serve(tmp_dir=tmp_path) as server:
        deadline = time.monotonic() + 10
        while "curl" not in server.log() and time.monotonic() < deadline:
            time.sleep(0.05)
        log = server.log()
        assert f"{server.url}/docs" in log
        page = next(w for w in log.split() if w.endswith("/playground"))
        assert page == f"{server.url}/models/iris/playground"
        assert httpx.get(page).status_code == 200
        line = next(ln.strip() for ln in log.splitlines() if ln.strip().startswith("curl "))
        argv = shlex.split(line)
        argv[0] = curl
        out = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=True)
        assert '"prediction":"setosa"' in out.stdout


def test_with_authentication_on_the_banners_curl_example_sends_the_key(tmp_path: Path) -> None:
    """A key in the store turns authentication on: the example says so and, pasted with MODELAPI_API_KEY set,
    answers (without the key it would be the 401 a newcomer gets)."""
    curl = require_tool("curl")
    bash = require_tool("bash")
    state = tmp_path / "state"
    key = cli_create_key(state)
    with serve("--state-dir", str(state), tmp_dir=tmp_path) as server:
        deadline = time.monotonic() + 10
        while "curl" not in server.log() and time.monotonic() < deadline:
            time.sleep(0.05)
        lines = server.log().splitlines()
        line = next(ln.strip() for ln in lines if ln.strip().startswith("curl "))
        assert "authentication is on" in next(ln for ln in lines if ln.startswith("Try it"))
        assert key not in server.log()  # the banner never shows a key
        env = {**os.environ, "MODELAPI_API_KEY": key, "PATH": os.pathsep.join([str(Path(curl).parent), "/bin"])}
        out = subprocess.run([bash, "-c", line], capture_output=True, text=True, timeout=10, check=True, env=env)
        assert '"prediction":"setosa"' in out.stdout


def test_sigterm_stops_the_server_cleanly(tmp_path: Path) -> None:
    with serve(tmp_dir=tmp_path) as server:
        server.process.send_signal(signal.SIGTERM)
        assert server.process.wait(timeout=10) == 0


def test_unloadable_model_exits_with_a_one_line_error(tmp_path: Path) -> None:
    bogus = tmp_path / "model.txt"
    bogus.write_text("hello")
    out = subprocess.run(
        [sys.executable, "-m", "modelapi", "serve", str(bogus), "--port", str(free_port())],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert out.returncode == 2
    assert out.stderr.startswith("modelapi: error:")
    assert "Traceback" not in out.stderr


def test_pickle_is_refused_without_trust(tmp_path: Path) -> None:
    import joblib
    from sklearn.linear_model import LinearRegression

    path = tmp_path / "lin.joblib"
    joblib.dump(LinearRegression().fit([[0.0], [1.0]], [0.0, 2.0]), path)
    out = subprocess.run(
        [sys.executable, "-m", "modelapi", "serve", str(path), "--port", str(free_port())],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert out.returncode == 2
    assert "--trust-pickle" in out.stderr
    digest = re.search(r"[0-9a-f]{64}", out.stderr)
    assert digest is not None
    with serve(str(path), "--sha256", digest.group(0), tmp_dir=tmp_path) as server:
        r = httpx.post(server.url + "/predict", json={"input": [3.0]})
        assert r.status_code == 200, r.text
        assert r.json()["prediction"] == pytest.approx(6.0)


def test_several_models_with_names(tmp_path: Path) -> None:
    with serve(
        "toymodels:IrisClassifier", "toymodels:Regressor", "--name", "flowers", "--name", "reg", tmp_dir=tmp_path
    ) as server:
        models = httpx.get(server.url + "/models").json()
        names = {m["name"] for m in (models["models"] if isinstance(models, dict) else models)}
        assert names == {"flowers", "reg"}
        r = httpx.post(server.url + "/models/reg/predict", json={"a": -1.5, "b": 2})
        assert r.status_code == 200, r.text
        assert r.json()["prediction"] == pytest.approx(-5.0)
        # /predict is only for a single model
        assert httpx.post(server.url + "/predict", json={"a": 1, "b": 2}).status_code == 404
