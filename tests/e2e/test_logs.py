"""The real server's log with ``--log-format json``: every stderr line a JSON object with its fields, an access
line per request whose id matches ``X-Request-ID``; an overload burst gives a few warnings, no errors."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from helpers.ports import free_port

from .server import TESTS_DIR


@dataclass
class Server:
    url: str
    process: subprocess.Popen[bytes]
    stderr_path: Path

    def stderr(self) -> str:
        return self.stderr_path.read_text(encoding="utf-8")

    def lines(self) -> list[dict[str, Any]]:
        out = []
        for line in self.stderr().splitlines():
            parsed = json.loads(line)  # every line, or the test fails here with the line
            assert isinstance(parsed, dict), line
            for key in ("time", "level", "logger", "message"):
                assert key in parsed, line
            out.append(parsed)
        return out


@contextlib.contextmanager
def serve_json(*args: str, tmp_path: Path) -> Iterator[Server]:
    """The server with ``--log-format json``; stderr (the log) apart from stdout (the banner)."""
    port = free_port()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS_DIR), os.environ.get("PYTHONPATH", "")])}
    err = tmp_path / "stderr.log"
    with err.open("wb") as err_file, (tmp_path / "stdout.log").open("wb") as out_file:
        proc = subprocess.Popen(
            [
                *(sys.executable, "-m", "modelapi", "serve", *args, "--log-format", "json"),
                *("--host", "127.0.0.1", "--port", str(port), "--state-dir", str(tmp_path / "state")),
            ],
            stdout=out_file,
            stderr=err_file,
            env=env,
        )
    server = Server(f"http://127.0.0.1:{port}", proc, err)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, server.stderr()
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(server.url + "/v2/health/ready", timeout=1.0).status_code == 200:
                    break
            assert time.monotonic() < deadline, server.stderr()
            time.sleep(0.05)
        yield server
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def test_json_log_lines_and_access_lines_match_the_request_ids(tmp_path: Path) -> None:
    with serve_json("toymodels:Regressor", tmp_path=tmp_path) as server:
        ok = httpx.post(server.url + "/models/regressor/predict", json={"a": 2, "b": 1})
        missing = httpx.get(server.url + '/nope?q="quoted"')
        failed = httpx.post(server.url + "/models/regressor/predict", json={"a": -999, "b": 1})
        assert (ok.status_code, missing.status_code, failed.status_code) == (200, 404, 500)
        time.sleep(0.3)
    lines = server.lines()  # after shutdown: its lines are JSON too
    access = {x["request_id"]: x for x in lines if x["logger"] == "modelapi.access"}
    for response in (ok, missing, failed):
        line = access[response.headers["x-request-id"]]
        assert line["status"] == response.status_code and line["bytes"] == len(response.content)
        assert line["client"].startswith("127.0.0.1:") and line["duration_ms"] >= 0
        assert line["time"].endswith("Z") and line["level"] == "INFO"
    assert access[missing.headers["x-request-id"]]["path"] == "/nope?q=%22quoted%22"  # (httpx encodes quotes)
    assert all('"GET ' in x["message"] or '"POST ' in x["message"] for x in access.values())  # quotes in JSON
    assert access[ok.headers["x-request-id"]]["model"] == "regressor"
    errors = [x for x in lines if x["level"] == "ERROR"]
    assert errors and all(x["request_id"] == failed.headers["x-request-id"] for x in errors)
    assert any("secret internal detail" in x.get("exception", "") for x in errors)


async def _burst(url: str, seconds: float) -> dict[int, int]:
    codes: dict[int, int] = {}
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
    async with httpx.AsyncClient(limits=limits, timeout=30) as client:
        end = time.monotonic() + seconds

        async def one() -> None:
            while time.monotonic() < end:
                r = await client.post(url + "/predict", json={"seconds": 0.05})
                codes[r.status_code] = codes.get(r.status_code, 0) + 1

        await asyncio.gather(*(one() for _ in range(48)))
    return codes


def test_an_overload_burst_is_a_few_warnings_and_no_errors(tmp_path: Path) -> None:
    # few access lines of refusals on the head a second, so that the burst's leave some out
    with serve_json(
        "toymodels:Sleepy", "--max-inflight", "1", "--access-log-refusals-per-s", "5", tmp_path=tmp_path
    ) as server:
        started = time.monotonic()
        codes = asyncio.run(_burst(server.url, 2.5))
        took = time.monotonic() - started
        time.sleep(1.5)  # the last second's count is written when that second ends
        lines = server.lines()
    refused = codes.get(503, 0)
    assert refused > 50 and codes.get(200, 0) > 0, codes
    assert not [x for x in lines if x["level"] in ("ERROR", "CRITICAL")]
    warnings = [x for x in lines if x["logger"] == "modelapi.rejections"]
    # the clients retry at once on their pooled connections: refused on the head or by the gate (overloaded), or
    # held until their Retry-After and refused (early_retry); at most one warning a second for each
    assert all(x["level"] == "WARNING" and x["reason"] in ("overloaded", "early_retry") for x in warnings)
    overloaded = [x for x in warnings if x["reason"] == "overloaded"]
    assert 1 <= len(overloaded) <= took + 3, [x["message"] for x in overloaded]
    assert len(warnings) - len(overloaded) <= took + 3, [x["message"] for x in warnings]
    assert sum(x["refused"] for x in warnings) == refused  # every refusal counted, none lost
    # a refusal on the head past access_log_refusals_per_s has no access line: the warnings count it, exactly
    logged = [x for x in lines if x["logger"] == "modelapi.access" and x["status"] == 503]
    unlogged = sum(x["unlogged"] for x in warnings)
    assert unlogged > 0 and len(logged) + unlogged == refused
    assert any("requests refused in the last" in x["message"] for x in warnings)
    assert "max_inflight" in overloaded[-1]["message"]
