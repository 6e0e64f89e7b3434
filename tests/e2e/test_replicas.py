"""Three replicas behind HAProxy, each its own host in a network namespace (tests/helpers/replicas.py), sharing
the PostgreSQL key store and jobs database and a Redis for jobs and limits, with two `modelapi worker`s.

Under a steady load through the balancer: a rolling restart fails no request; kill -9 of a replica fails at
most the requests in flight then, and the balancer marks it down within 2 s; a key revoked through one replica
is refused by every replica within 1 s; a 1,000,000-row job submitted through the balancer ends with exactly
the in-process result although a replica and the job's worker are killed while it runs. Prints the figures.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
import pytest

from helpers.redis_server import own_redis
from helpers.replicas import Balancer, Network, Relay, haproxy, network, wait_ready
from helpers.services import PG_PORT, postgres_schema

from .server import TESTS_DIR

MODEL = "toymodels:IrisClassifier"
ROWS = 1_000_000
FEATURES = ("sepal_length", "sepal_width", "petal_length", "petal_width")
LEASE_S = "4"  # a killed worker's job is re-sent within half a lease
SHUTDOWN_DELAY_S = "2"


def _env() -> dict[str, str]:
    path = os.pathsep.join([str(TESTS_DIR), os.environ.get("PYTHONPATH", "")])
    return {**os.environ, "PYTHONPATH": path, "MODELAPI_JOB_LEASE_S": LEASE_S, "MODELAPI_LOG_FORMAT": "text"}


def _require_haproxy() -> None:
    if shutil.which("haproxy") is None:
        if os.environ.get("CI") == "true":
            pytest.fail("haproxy is required in CI (.ci/run installs Debian's package)")
        pytest.skip("haproxy is not installed (Debian: apt-get install haproxy)")


@dataclass
class Replica:
    index: int
    args: list[str]
    log: Path
    url: str  # straight to it, through the balancer's per-replica frontend
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(self.args, stdout=out, stderr=subprocess.STDOUT, env=_env())

    def wait_ready(self, timeout: float = 180.0) -> None:
        wait_ready(self.url, timeout, self.proc, self.log)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@dataclass
class Load:
    """Threads sending 1-row predictions through the balancer, one after another, until stopped."""

    url: str
    key: str
    threads: int = 3
    results: list[tuple[float, float, int]] = field(default_factory=list)  # (sent, answered, status; 0: error)
    #: what each failure was, by when it was sent: the exception, or the status and the start of the answer's body
    errors: list[tuple[float, str]] = field(default_factory=list)
    stopping: threading.Event = field(default_factory=threading.Event)
    _workers: list[threading.Thread] = field(default_factory=list)

    def _run(self) -> None:
        host, port = self.url.removeprefix("http://").split(":")
        body = json.dumps(dict(zip(FEATURES, [5.1, 3.5, 1.4, 0.2], strict=True)))
        headers = {"content-type": "application/json", "authorization": f"Bearer {self.key}"}
        conn = http.client.HTTPConnection(host, int(port), timeout=30)
        while not self.stopping.is_set():
            sent = time.monotonic()
            try:
                conn.request("POST", "/models/iris/predict", body, headers)
                response = conn.getresponse()
                answer = response.read()
                status = response.status
                if status != 200:
                    self.errors.append((sent, f"{status} {answer[:160]!r}"))
            except (OSError, http.client.HTTPException) as exc:
                status = 0
                self.errors.append((sent, repr(exc)))
                conn.close()
                conn = http.client.HTTPConnection(host, int(port), timeout=30)
            self.results.append((sent, time.monotonic(), status))
            time.sleep(0.01)
        conn.close()

    def start(self) -> None:
        self._workers = [threading.Thread(target=self._run, daemon=True) for _ in range(self.threads)]
        for t in self._workers:
            t.start()

    def stop(self) -> None:
        self.stopping.set()
        for t in self._workers:
            t.join(timeout=40)

    def between(self, start: float, end: float) -> tuple[int, int]:
        """(requests sent in [start, end), failed ones among them)."""
        sent = [r for r in self.results if start <= r[0] < end]
        return len(sent), sum(1 for r in sent if r[2] != 200)

    def failures(self, start: float, end: float) -> dict[int, int]:
        """The failed answers sent in [start, end), by status (0: no answer)."""
        out: dict[int, int] = {}
        for sent, _, status in self.results:
            if start <= sent < end and status != 200:
                out[status] = out.get(status, 0) + 1
        return out

    def described(self, start: float, end: float) -> str:
        """The failures of the requests sent in [start, end), as the client saw each (for an assertion's message)."""
        return "; ".join(f"+{sent - start:.2f} s: {what}" for sent, what in self.errors if start <= sent < end)

    def in_flight(self, start: float, end: float) -> int:
        """Requests in flight at some moment of [start, end]: sent by ``end``, not answered before ``start``."""
        return sum(1 for r in self.results if r[0] <= end and r[1] > start)


@contextlib.contextmanager
def processes(items: list[Replica]) -> Iterator[list[Replica]]:
    try:
        yield items
    finally:
        for item in items:
            item.stop()


def _cli(prefix: list[str], *args: str) -> str:
    done = subprocess.run([*prefix, sys.executable, "-m", "modelapi", *args], capture_output=True, text=True,
                          timeout=120, env=_env())  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def _write_input(path: Path) -> None:
    rng = np.random.default_rng(13)
    data = np.round(rng.uniform([4.3, 2.0, 1.0, 0.1], [7.9, 4.4, 6.9, 2.5], (ROWS, 4)), 1)
    np.savetxt(path, data, fmt="%.1f", delimiter=",", header=",".join(FEATURES), comments="")


def _wait_server(balancer: Balancer, name: str, want: str, timeout: float) -> float:
    started = time.monotonic()
    while balancer.servers().get(name) != want:
        assert time.monotonic() - started < timeout, f"{name} not {want} after {timeout} s: {balancer.servers()}"
        time.sleep(0.02)
    return time.monotonic() - started


def _lease_owner(database: str, job_id: str) -> str | None:
    from sqlalchemy import create_engine, text

    engine = create_engine(database)
    try:
        with engine.connect() as conn:
            return conn.execute(text("SELECT lease_owner FROM modelapi_jobs WHERE id = :i"), {"i": job_id}).scalar()
    finally:
        engine.dispose()


def test_replicas_behind_haproxy(tmp_path: Path) -> None:
    _require_haproxy()
    figures: dict[str, str] = {}
    started = time.monotonic()
    with postgres_schema() as database, own_redis(tmp_path) as redis, network(3) as net:
        print(f"\nreplicas on {net.reason}")
        figures["network"] = net.reason
        relays = [Relay("pg", 5432, PG_PORT), Relay("redis", 6379, redis.port)] if net.hub else []
        shared_db = database.replace(f"@127.0.0.1:{PG_PORT}/", f"@{net.service_host}:{5432 if net.hub else PG_PORT}/")
        shared_redis = f"redis://{net.service_host}:{6379 if net.hub else redis.port}/0"
        queue = f"modelapi-test-{uuid.uuid4().hex[:8]}"
        load_key = _cli([], "keys", "create", "--name", "load", "--rate", "1000000/min", "--database-url", database)
        victim = _cli([], "keys", "create", "--name", "victim", "--database-url", database)
        # the in-process result, computed while the replicas start
        _write_input(tmp_path / "in.csv")
        expected = tmp_path / "expected.csv"
        local = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "modelapi",
                "predict",
                MODEL,
                "--model",
                "iris",
                "--input",
                str(tmp_path / "in.csv"),
                "--output",
                str(expected),
            ],
            env=_env(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        with contextlib.ExitStack() as stack:
            stack.callback(_end, local)
            balancer = stack.enter_context(haproxy(net, relays, tmp_path))
            replicas = [
                Replica(
                    i,
                    [
                        *net.prefix(i),
                        sys.executable,
                        "-m",
                        "modelapi",
                        "serve",
                        MODEL,
                        "--host",
                        net.hosts[i],
                        "--port",
                        str(net.ports[i]),
                        "--database-url",
                        shared_db,
                        "--redis-url",
                        shared_redis,
                        "--queue",
                        queue,
                        "--state-dir",
                        str(tmp_path / f"r{i + 1}"),
                        "--auth",
                        "on",
                        "--rate-limit",
                        "0",
                        "--graceful-timeout",
                        "10",
                        # past HAProxy's two failed checks half a second apart: it stops sending to a replica
                        # before that replica closes its connections (docs/deployment.md)
                        "--shutdown-delay",
                        SHUTDOWN_DELAY_S,
                    ],
                    tmp_path / f"replica-{i + 1}.log",
                    balancer.direct[i],
                )
                for i in range(3)
            ]
            workers = [
                Replica(
                    10 + i,
                    [
                        sys.executable,
                        "-m",
                        "modelapi",
                        "worker",
                        MODEL,
                        "--redis-url",
                        redis.url,
                        "--database-url",
                        database,
                        "--queue",
                        queue,
                    ],
                    tmp_path / f"worker-{i + 1}.log",
                    "",
                )
                for i in range(2)
            ]
            with processes(replicas + workers):
                for r in replicas + workers:
                    r.start()
                for r in replicas:
                    r.wait_ready()
                for i in range(3):
                    _wait_server(balancer, f"r{i + 1}", "UP", 30)
                figures["start-up"] = f"{time.monotonic() - started:.1f} s"
                load = Load(balancer.url, load_key)
                load.start()
                try:
                    _phases(balancer, replicas, workers, load, net, shared_db, database, victim, tmp_path, figures,
                            local)  # fmt: skip
                finally:
                    load.stop()
    figures["total"] = f"{time.monotonic() - started:.1f} s"
    print("\n".join(f"  {k}: {v}" for k, v in figures.items()))


def _end(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.kill()
        proc.wait()


def _phases(balancer: Balancer, replicas: list[Replica], workers: list[Replica], load: Load, net: Network,
            shared_db: str, database: str, victim: str, tmp_path: Path, figures: dict[str, str],
            local: subprocess.Popen[bytes]) -> None:  # fmt: skip
    time.sleep(1.0)
    # rolling restart: SIGTERM one replica, wait until it is ready again (and the balancer has it), next
    phase = time.monotonic()
    for i, replica in enumerate(replicas):
        replica.stop(signal.SIGTERM)
        replica.start()
        replica.wait_ready()
        _wait_server(balancer, f"r{i + 1}", "UP", 30)
    sent, failed = load.between(phase, time.monotonic())
    figures["rolling restart"] = f"{failed} failed of {sent} requests in {time.monotonic() - phase:.1f} s"
    ended = [line for line in (tmp_path / "haproxy.log").read_text().splitlines() if " api " in line]  # (httplog)
    assert sent > 0 and failed == 0, (
        f"{figures['rolling restart']}: {load.described(phase, time.monotonic())}; HAProxy: {ended[-5:]}"
    )

    # kill -9 of a replica: at most the requests it had in flight fail; the balancer marks it down within 2 s
    killed = replicas[1]
    assert killed.proc is not None
    at = time.monotonic()
    killed.proc.kill()  # SIGKILL is delivered asynchronously: the replica takes requests until it is reaped
    killed.proc.wait()
    dead = time.monotonic()
    eject_s = _wait_server(balancer, "r2", "DOWN", 10)
    sessions = balancer.sessions()["r2"]
    time.sleep(2.0)
    assert balancer.sessions()["r2"] == sessions, "the balancer still sent requests to the killed replica"
    in_flight = load.in_flight(at, dead)
    sent, failed = load.between(at - 0.5, time.monotonic())
    how = load.failures(at - 0.5, time.monotonic())
    figures["kill -9"] = (
        f"{failed} failed {how or ''} of {sent} requests ({in_flight} in flight while it died, "
        f"{(dead - at) * 1000:.0f} ms); ejected {eject_s:.2f} s after"
    )
    assert failed <= in_flight and eject_s <= 2.0, figures["kill -9"]
    killed.start()  # back while the next phases run

    # revocation through one replica's host: every replica refuses the key within 1 s
    with httpx.Client(headers={"authorization": f"Bearer {victim}"}, timeout=10) as client:
        live = [r for r in replicas if r is not killed]
        assert all(client.get(r.url + "/v2/models/iris").status_code == 200 for r in live)
        key_id = victim.split("_")[1]
        _cli(net.prefix(0), "keys", "revoke", key_id, "--database-url", shared_db)
        revoked = time.monotonic()
        lags = []
        for r in live:
            while client.get(r.url + "/v2/models/iris").status_code != 401:
                assert time.monotonic() - revoked < 5, f"{r.url} still accepts a revoked key"
            lags.append(time.monotonic() - revoked)
    figures["revocation"] = f"refused by every live replica {max(lags) * 1000:.0f} ms after `keys revoke` returned"
    assert max(lags) <= 1.0, figures["revocation"]

    # a 1,000,000-row job through the balancer; a replica and the job's worker are killed while it runs
    killed.wait_ready()
    key = load.key
    with httpx.Client(base_url=balancer.url, headers={"authorization": f"Bearer {key}"}, timeout=120) as client:
        phase = time.monotonic()
        r = client.post("/models/iris/jobs", content=(tmp_path / "in.csv").read_bytes(),
                        headers={"content-type": "text/csv"})  # fmt: skip
        assert r.status_code == 202, r.text
        location = r.headers["location"]
        job_id = location.rstrip("/").rsplit("/", 1)[1]
        status = _poll(
            client, location, lambda s: s["progress"]["chunks_done"] >= 10 or s["status"] not in ("queued", "running")
        )
        assert status["status"] == "running", f"the job ended before the kills: {status}"
        owner = _lease_owner(database, job_id) or ""
        victim_worker = next(w for w in workers if w.proc is not None and f":{w.proc.pid}:" in owner)
        assert victim_worker.proc is not None
        victim_worker.proc.kill()
        assert replicas[2].proc is not None
        replicas[2].proc.kill()
        kills = status["progress"]["chunks_done"]
        done = _poll(client, location, lambda s: s["status"] != "running" and s["status"] != "queued", 600)
        job_s = time.monotonic() - phase
        assert done["status"] == "succeeded", done
        result = client.get(f"{location}/result", headers={"accept": "text/csv"})
        assert result.status_code == 200
        assert local.wait(timeout=300) == 0, local.stderr.read() if local.stderr else ""
        same = result.content == (tmp_path / "expected.csv").read_bytes()
    figures["job"] = (
        f"{ROWS:,} rows in {job_s:.1f} s through the balancer (worker and replica 3 killed at chunk {kills} of "
        f"{done['progress']['chunks_total']}); result {'identical to' if same else 'DIFFERENT from'} in-process"
    )
    assert same, figures["job"]


def _poll(client: httpx.Client, location: str, done: object, timeout: float = 300.0) -> dict[str, object]:
    deadline = time.monotonic() + timeout
    while True:
        r = client.get(location)
        if r.status_code == 200:
            body = r.json()
            if done(body):  # type: ignore[operator]
                return body  # type: ignore[no-any-return]
        assert time.monotonic() < deadline, f"timed out; last: {r.status_code} {r.text[:300]}"
        time.sleep(0.1)
