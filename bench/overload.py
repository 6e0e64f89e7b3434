"""The overload cell of ``make bench``: goodput when far more clients come than one core can serve.

The server runs on core 0 with ``--max-queue-ms``; wrk (``overload.lua``: answers counted by status) on core 1.
First the saturating connection count (``--saturate``, default 64) is measured, then 10x and 30x that many, once
with clients that wait ``Retry-After`` and a random 0-50 % more after a 503 (as ``docs/overload.md`` asks) and once
with wrk's own behaviour, a new request the moment an answer arrives (the worst case: the server holds such a retry
until its Retry-After, ``http/holds.py``, else refusals would cost it CPU as fast as it can answer them). For each
cell: successful requests/s, wrk's p50/p99 over all answers, the p99 of *successful* requests as a sampling client
sees them (one more keep-alive connection sending the same request in a closed loop: wrk's histogram cannot split
latency by status), the status mix (only 200, 429 and 503 are allowed), the server's CPU time per request and as a
share of its core (under 100 % at saturation when other work takes the core), and ``/v2/health/live`` latency from
side probes every 50 ms throughout: one on a connection it keeps, and two that open a new connection for each call,
as the kubelet's probes do, one on the main port and one on the operations port (``--metrics-port``), whose
listener the flood leaves alone.

Rounds (``--rounds``, default 3): for each kind of client, the saturated cell and the overload cells run once per
round, after a few idle seconds; each overload cell is compared with its own round's saturated cell, and the
targets take the median of the rounds' ratios (a round without one, its saturated cell having served nothing, is
left out and the median says so). A single pass compared each cell with the one saturated cell, up to two cells
earlier, on a machine whose speed drifts within that time: the same code measured 85-133 % of saturated between
runs.

Then what many connections cost with no modelapi code and nothing refused (``connection_cells``): the HTTP floor
(``floor.py``, a predict per request) in a closed loop at the same connection counts, in as many rounds, each
count's answers against its own saturated cell's and the CPU an answer more than there, beside the CPU each
successful request of modelapi's overload cells took more than its round's saturated cell: how much of the
overload cells' loss is the platform's (uvloop, uvicorn and the kernel, serving that many connections in turn).

Last, what a refusal costs over sockets: a server whose every request is refused (``bench/held.py``: its one
request in flight holds the model), flooded by clients that retry at once with early retries not held; its CPU
per answer against the saturated cell's CPU per served request (the issue's target: at most a tenth).

    python -m bench.overload [--seconds 10] [--saturate 64] [--max-queue-ms MS] [--factors 10,30] [--rounds 3]

The queue budget is the p99 at saturation, as an operator who promises a latency sets it (docs/overload.md): unless
``--max-queue-ms`` gives one, a calibration server (the default budget) first serves ``CALIBRATION_CELLS``
saturated cells, and the median p99 of their successful requests, in whole milliseconds, is the budget (if none
of them had a successful request, the server's default budget). A fixed 20 ms, the p99 at saturation on the
machines before 2026-12-07, was 1.5-1.9x it on a faster one, and with it the successful requests' p99 under
overload was three times the saturated one (with 100 ms it is about that 100 ms). An A/B run (``--server-args``)
gives ``--max-queue-ms``, so that both sides have the same budget.
"""

from __future__ import annotations

import argparse
import http.client
import math
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import orjson

from . import procfs, servers, workload
from .loadgen import MARK, require

SERVER_CORE, LOAD_CORE = 0, 1
#: seconds idle before each round: the previous flood's returns and holds run out meanwhile
SETTLE_S = 3.0
#: the span of each sample of a cell's CPU over time (``CellResult.cpu_each``)
CPU_EACH_S = 0.5
#: a cell whose server took less of its core than this has its CPU over time shown under its round's table
BUSY = 0.95
SCRIPT = Path(__file__).with_name("overload.lua")
RESULTS = Path(__file__).with_name("results")
ROWS = 32
ALLOWED = {200, 429, 503}
#: wrk's ``--timeout`` for clients that wait ``Retry-After``: wrk counts a connection as timed out once its last
#: request was sent longer ago than that, waiting or not, and a refused client may be told to wait up to 30 s (plus
#: the script's 0-50 %); an answer that takes longer than 10 s still shows in the cell's latencies
WAITING_TIMEOUT_S = 55
#: saturated cells whose p99 of successful requests sets the queue budget when ``--max-queue-ms`` gives none
CALIBRATION_CELLS = 3


@dataclass
class Probe:
    """A side client on its own connection: ``live`` GETs every 50 ms, or ``infer`` POSTs in a closed loop; ``honour``:
    after a 503 or 429 it waits Retry-After plus 0-50 %, as the cell's clients do (else it retries at once, and a
    retry the server holds until its Retry-After is answered 503 "retry now", never a success). ``fresh``: each
    GET on a new connection, closed after its answer, as the kubelet's probes are (their latency counts the
    connection's set-up; ``connects`` records that part alone)."""

    url: str
    body: bytes | None = None
    content_type: str = "application/json"
    honour: bool = False
    fresh: bool = False
    latencies: list[float] = field(default_factory=list)
    statuses: list[int] = field(default_factory=list)
    connects: list[float] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        """Probes until ``stop`` is set; each call, its latency and status are recorded."""
        if self.fresh:
            self._run_fresh()
            return
        with httpx.Client(timeout=30) as client:
            while not self.stop.is_set():
                started = time.perf_counter()
                if self.body is None:
                    r = client.get(self.url)
                else:
                    r = client.post(self.url, content=self.body, headers={"content-type": self.content_type})
                self.latencies.append(time.perf_counter() - started)
                self.statuses.append(r.status_code)
                if self.body is None:
                    self.stop.wait(0.05)
                elif self.honour and r.status_code in (429, 503):
                    wait = float(r.headers.get("retry-after", "1"))
                    self.stop.wait(wait * (1 + 0.5 * random.random()))

    def _run_fresh(self) -> None:
        parts = urlsplit(self.url)
        while not self.stop.is_set():
            started = time.perf_counter()
            conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=30)
            try:
                conn.connect()  # the kernel completes the handshake; the server has yet to accept it
                connected = time.perf_counter()
                conn.request("GET", parts.path, headers={"connection": "close"})
                r = conn.getresponse()
                r.read()
            finally:
                conn.close()
            self.latencies.append(time.perf_counter() - started)
            self.connects.append(connected - started)
            self.statuses.append(r.status)
            self.stop.wait(0.05)


@dataclass
class CellResult:
    connections: int
    seconds: float
    statuses: dict[int, int]
    socket_errors: int
    wrk_p50_ms: float
    wrk_p99_ms: float
    ok_p99_ms: float | None  # the sampling client's successful requests
    ok_samples: int
    cpu_s: float
    live_p50_ms: float
    live_max_ms: float
    #: the new-connection probes' worst latency and, of it, the connection's set-up: main port, operations port
    fresh_max_ms: float | None = None
    fresh_connect_ms: float | None = None
    ops_max_ms: float | None = None
    ops_connect_ms: float | None = None
    #: the server's CPU, as a share of its core, in each ``CPU_EACH_S`` of the cell (how it went, not just its mean)
    cpu_each: tuple[float, ...] = ()
    #: the ``Retry-After`` values (seconds) the cell's 503 and 429 answers carried, counted
    retry_after: dict[int, int] = field(default_factory=dict)

    @property
    def ok_rps(self) -> float:
        return self.statuses.get(200, 0) / self.seconds


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


def _probe_process(
    url: str, body: workload.Body | None = None, honour: bool = False, fresh: bool = False
) -> subprocess.Popen[bytes]:
    """A ``Probe`` in a process of its own on the load core: in this process, which runs the harness and the
    other probe, its calls waited for this process's GIL and threads (measured: 0.5-2.3 s stalls at the start of
    the busy cells, while a probe in its own process on the same core saw at most 54 ms on the same server)."""
    argv = [sys.executable, "-m", "bench.overload", "--probe", url]
    if body is not None:
        argv += ["--probe-body", str(body.path), "--probe-type", body.content_type]
    if honour:
        argv.append("--probe-honour")
    if fresh:
        argv.append("--probe-fresh")
    root = Path(__file__).resolve().parents[1]
    return subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=root)


def _probe_results(proc: subprocess.Popen[bytes]) -> tuple[list[float], list[int], list[float]]:
    """What a probe recorded (latencies, statuses, and a new-connection probe's set-up times); its stdin closed
    already (every probe's at once: one still probing after the cell would add calls to an idle server)."""
    assert proc.stdout is not None
    out = proc.stdout.read()
    proc.wait(60)
    if proc.returncode != 0 or not out:
        raise RuntimeError(f"the probe process failed (exit {proc.returncode})")
    got = orjson.loads(out)
    return got["latencies"], got["statuses"], got["connects"]


def _run_probe(args: argparse.Namespace) -> int:
    """The probe process: probes until its stdin closes, then prints its latencies and statuses as JSON."""
    body = Path(args.probe_body).read_bytes() if args.probe_body else None
    probe = Probe(args.probe, body, args.probe_type, honour=args.probe_honour, fresh=args.probe_fresh)
    thread = threading.Thread(target=probe.run, daemon=True)
    thread.start()
    while not probe.latencies and thread.is_alive():
        time.sleep(0.01)
    sys.stdout.buffer.write(b"ready\n")  # its first call answered: the cell may start
    sys.stdout.flush()
    sys.stdin.buffer.read()
    probe.stop.set()
    thread.join(30)
    got = {"latencies": probe.latencies, "statuses": probe.statuses, "connects": probe.connects}
    sys.stdout.buffer.write(orjson.dumps(got))
    return 0


def cell(
    srv: servers.Running,
    body: workload.Body,
    connections: int,
    seconds: int,
    honour: bool,
    live: str = "/v2/health/live",
    ops: str | None = None,
    path: str = "/v2/models/logreg/infer",
) -> CellResult:
    """One cell; ``ops``: the server's operations port (``http://host:port``), probed on new connections beside
    the main port (without it, neither new-connection probe runs); ``path``: where ``body`` is posted."""
    wrk = require("wrk", "install it with: apt-get install -y wrk")
    url = srv.url + path
    pids = procfs.tree(srv.process.pid)
    cpu = procfs.cpu_seconds(pids)
    probes = [_probe_process(srv.url + live), _probe_process(url, body, honour)]
    if ops is not None:
        probes += [_probe_process(srv.url + live, fresh=True), _probe_process(ops + live, fresh=True)]
    for p in probes:
        assert p.stdout is not None
        p.stdout.readline()  # "ready"
    cmd = [
        "taskset", "-c", str(LOAD_CORE), wrk, "-t", "1", "-c", str(connections), "-d", f"{seconds}s",
        "--timeout", f"{WAITING_TIMEOUT_S if honour else 10}s", "-s", str(SCRIPT), url, "--", str(body.path),
        body.content_type,
        "honour" if honour else "",
    ]  # fmt: skip
    each: list[float] = []
    done = threading.Event()
    sampler = threading.Thread(target=_sample_cpu, args=(pids, each, done), daemon=True)
    sampler.start()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60, check=False)
    done.set()
    sampler.join()
    cpu = procfs.cpu_seconds(pids) - cpu
    for p in probes:
        assert p.stdin is not None
        p.stdin.close()  # the probe stops and reports (after its "ready" line, read above)
    (live_latencies, _, _), (sample_latencies, sample_statuses, _), *fresh = (_probe_results(p) for p in probes)
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith(MARK)), None)
    if proc.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed (exit {proc.returncode}): {proc.stderr.strip() or proc.stdout.strip()}")
    r = orjson.loads(line[len(MARK) :])
    ok = [lat for lat, status in zip(sample_latencies, sample_statuses, strict=True) if status == 200]
    for _, statuses, _ in fresh:  # a 404 would be a server without the health routes on its operations port
        if set(statuses) != {200}:
            raise RuntimeError(f"a new-connection probe of /v2/health/live got {sorted(set(statuses))}")
    worst: list[tuple[float | None, float | None]] = [_worst(lat, connects) for lat, _, connects in fresh]
    worst = worst or [(None, None), (None, None)]
    return CellResult(
        connections,
        r["duration_us"] / 1e6,
        {int(k): int(v) for k, v in r["statuses"].items()},
        sum(int(r[k]) for k in r if k.startswith("errors_")),
        r["p50_us"] / 1e3,
        r["p99_us"] / 1e3,
        _pct(ok, 0.99) if ok else None,
        len(ok),
        cpu,
        _pct(live_latencies, 0.5),
        max(live_latencies) * 1000,
        *worst[0],
        *worst[1],
        tuple(each),
        {int(k): int(v) for k, v in r.get("retry_after", {}).items()},
    )


def _sample_cpu(pids: list[int], each: list[float], done: threading.Event) -> None:
    """The server's share of its core in each ``CPU_EACH_S`` until ``done`` (the last, partial span left out)."""
    last, at = procfs.cpu_seconds(pids), time.monotonic()
    while not done.wait(CPU_EACH_S):
        cpu, now = procfs.cpu_seconds(pids), time.monotonic()
        each.append((cpu - last) / (now - at))
        last, at = cpu, now


def _worst(latencies: list[float], connects: list[float]) -> tuple[float, float]:
    """A new-connection probe's worst call (ms), and how much of it its connection's set-up took."""
    i = max(range(len(latencies)), key=latencies.__getitem__)
    return latencies[i] * 1000, connects[i] * 1000


def render(results: list[CellResult]) -> str:
    """One round's table: the saturated cell, then the overload cells."""
    sat = results[0]
    lines = [
        "| connections | x saturation | OK req/s | OK vs saturated | wrk p50 / p99 ms (all answers) | p99 ms of OK "
        "(sampling client, n) | OK p99 vs saturated | status mix | socket errors | server CPU us/answer | "
        "server CPU % of its core | live p50 / max ms | new-connection live max ms (connecting): main port / "
        "operations port |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for c in results:
        answers = sum(c.statuses.values())
        mix = ", ".join(f"{s}: {n:,}" for s, n in sorted(c.statuses.items()))
        ok_p99 = "-" if c.ok_p99_ms is None else f"{c.ok_p99_ms:.1f} ({c.ok_samples})"
        ratio = "-" if c.ok_p99_ms is None or sat.ok_p99_ms is None else f"{c.ok_p99_ms / sat.ok_p99_ms:.2f}x"
        share = _share(c.ok_rps / sat.ok_rps if sat.ok_rps > 0 else None)  # a saturated cell that served nothing
        lines.append(
            f"| {c.connections} | {c.connections / sat.connections:.0f}x | {c.ok_rps:,.0f} | "
            f"{share} | {c.wrk_p50_ms:.1f} / {c.wrk_p99_ms:.1f} | {ok_p99} | {ratio} | {mix} | "
            f"{c.socket_errors} | {c.cpu_s / max(answers, 1) * 1e6:.0f} | {c.cpu_s / c.seconds:.0%} | "
            f"{c.live_p50_ms:.1f} / {c.live_max_ms:.1f} | {_fresh(c.fresh_max_ms, c.fresh_connect_ms)} / "
            f"{_fresh(c.ops_max_ms, c.ops_connect_ms)} |"
        )
    lines.append("")
    served = served_us(sat)
    lines.append(f"CPU per served request (saturated cell): {'-' if served is None else f'{served:.0f}'} us")
    for c in results:
        if c.retry_after:
            given = ", ".join(f"{s} s: {n:,}" for s, n in sorted(c.retry_after.items()))
            lines.append(f"{c.connections} connections, Retry-After answered: {given}")
        if c.cpu_each and c.cpu_s / c.seconds < BUSY:
            shares = " ".join(f"{v:.0%}" for v in c.cpu_each)
            lines.append(f"{c.connections} connections, the server's CPU each {CPU_EACH_S:g} s: {shares}")
    bad = {s for c in results for s in c.statuses} - ALLOWED
    lines.append(f"statuses outside 200/429/503: {sorted(bad) if bad else 'none'}")
    return "\n".join(lines)


def render_rounds(rounds: list[list[CellResult]]) -> str:
    """Each round's table, then the ratios each round gives against its own saturated cell and their medians,
    then the targets (``targets``)."""
    out = []
    for i, results in enumerate(rounds, 1):
        out += [f"#### round {i} of {len(rounds)}", "", render(results), ""]
    out += [
        "| x saturation | OK vs saturated, each round | median | OK p99 vs saturated, each round | median |",
        "| --- | --- | --- | --- | --- |",
    ]
    for i in range(1, len(rounds[0])):
        x = f"{rounds[0][i].connections / rounds[0][0].connections:.0f}x"
        ok, p99 = _ok_ratios(rounds, i), _p99_ratios(rounds, i)
        each_ok = " / ".join(_share(v) for v in ok)  # each round in its place: "-" where it has no ratio
        each_p99 = " / ".join(_times(v) for v in p99)
        out.append(f"| {x} | {each_ok} | {_share(_median(ok)[0])} | {each_p99} | {_times(_median(p99)[0])} |")
    out.append("")
    out += targets(rounds)
    return "\n".join(out)


def _ok_ratios(rounds: list[list[CellResult]], i: int) -> list[float | None]:
    """Cell ``i``'s successful requests/s against its own round's saturated cell, one per round; ``None`` for a
    round whose saturated cell served nothing (no ratio to take)."""
    return [r[i].ok_rps / r[0].ok_rps if r[0].ok_rps > 0 else None for r in rounds]


def _p99_ratios(rounds: list[list[CellResult]], i: int) -> list[float | None]:
    """Cell ``i``'s p99 of successful requests against its own round's saturated one, one per round: ``None``
    where the saturated cell has none (no ratio to take); infinite where only cell ``i`` has none, its sampling
    client never served in the cell, worse than any bound (a single pass failed it, and a round left out would
    let the others pass it)."""
    out: list[float | None] = []
    for r in rounds:
        got, sat = r[i].ok_p99_ms, r[0].ok_p99_ms
        out.append(None if sat is None or sat <= 0 else math.inf if got is None else got / sat)
    return out


def _median(ratios: list[float | None]) -> tuple[float | None, str]:
    """The median of the rounds that have a ratio (``None`` if none has), and what it is the median of: nothing
    for a single round, `` (median of 3 rounds)``, or `` (median of 2 of 3 rounds)`` when a round had none."""
    have = [v for v in ratios if v is not None]
    if not have:
        return None, ""
    if len(ratios) == 1:
        return have[0], ""
    of = f"{len(have)} of {len(ratios)}" if len(have) < len(ratios) else f"{len(ratios)}"
    return statistics.median(have), f" (median of {of} rounds)"


def _share(v: float | None) -> str:
    return "-" if v is None else f"{v:.0%}"


def _times(v: float | None) -> str:
    return "-" if v is None else "no OK" if math.isinf(v) else f"{v:.2f}x"


def _fresh(worst: float | None, connect: float | None) -> str:
    return "-" if worst is None or connect is None else f"{worst:,.1f} ({connect:,.1f})"


def served_us(sat: CellResult) -> float | None:
    """The saturated cell's CPU per served request (us); ``None`` if it served none."""
    served = sat.statuses.get(200, 0)
    return sat.cpu_s / served * 1e6 if served else None


def refusal_cells(
    body: workload.Body, model: Path, connections: int, seconds: int, extra: tuple[str, ...]
) -> list[tuple[str, CellResult]]:
    """Every request refused: ``bench.held`` holds its one request in flight (``--max-inflight 1``), so the rest
    are refused, on the head once the gate has refused one; ``--no-hold-early-retries`` and wrk's clients that
    retry at once keep the server refusing as fast as it can; the default queue budget, so that they are refused
    for the model in flight (with the cells' 20 ms, heads waiting their turn behind 640 connections' refusals wait
    longer than that to be read, and the model idle, each is refused through the app for that wait, not on its
    head: docs/overload.md). Its CPU per answer is the CPU per refusal, measured over sockets (the overload
    cells cannot split their CPU between served and refused requests: CPU per served request itself moves with
    the connection count). Once with the default log level, once without access lines;
    and two yardsticks with no modelapi code: the HTTP floor's answer to a path it does not serve (uvicorn, a
    constant 404 without reading the body), the least any answer over uvicorn costs; and the socket floor
    (``socket_floor.py``: uvloop and httptools, a constant 503 written per request, no ASGI), the least a Python
    server on this machine spends to answer a request at all: the event loop's read and write and the kernel's TCP
    work on both."""
    out = []
    for label, more in (("default", ()), ("no access lines (--log-level warning)", ("--log-level", "warning"))):
        argv = (*extra, "--max-inflight", "1", "--no-hold-early-retries", *more)
        spec = servers.modelapi("modelapi refusals", ["bench.held:Held"], *argv)
        with servers.serve(spec, core=SERVER_CORE, env=dict(os.environ), log_dir=RESULTS) as srv:
            cell(srv, body, connections, 1, False)  # warm-up: the gate refuses, then the protocol does
            out.append((label, cell(srv, body, connections, seconds, False)))
    with servers.serve(servers.floor(model), core=SERVER_CORE, env=dict(os.environ), log_dir=RESULTS) as srv:
        cell(srv, body, connections, 1, False, live="/health")
        out.append(("HTTP floor: a constant 404, body unread", cell(srv, body, connections, seconds, False, "/health")))
    with servers.serve(servers.socket_floor(), core=SERVER_CORE, env=dict(os.environ), log_dir=RESULTS) as srv:
        cell(srv, body, connections, 1, False, live="/health")
        label = "socket floor: a constant 503, no ASGI"
        out.append((label, cell(srv, body, connections, seconds, False, "/health")))
    return out


def connection_cells(
    model: Path, body: workload.Body, counts: tuple[int, ...], seconds: int, rounds: int
) -> list[list[CellResult]]:
    """What many connections cost with no modelapi code and nothing refused: the HTTP floor (``floor.py``: uvicorn
    and a bare ASGI app, a predict per request) in a closed loop at each of ``counts`` (the saturated count first),
    in ``rounds`` as the overload cells. Its answers at 10x and 30x against its own at the saturated count are the
    platform's share of what the overload cells lose: the event loop, uvicorn and the kernel with that many
    connections, each served in turn."""
    out = []
    with servers.serve(servers.floor(model), core=SERVER_CORE, env=dict(os.environ), log_dir=RESULTS) as srv:
        cell(srv, body, counts[0], 2, False, "/health", path="/predict")  # warm-up
        for _ in range(rounds):
            time.sleep(SETTLE_S)
            out.append([cell(srv, body, n, seconds, False, "/health", path="/predict") for n in counts])
    return out


def _more_us(rounds: list[list[CellResult]], i: int) -> list[float | None]:
    """Cell ``i``'s CPU per successful request (us) less its own round's saturated cell's, one per round."""
    out: list[float | None] = []
    for r in rounds:
        here, sat = served_us(r[i]), served_us(r[0])
        out.append(None if here is None or sat is None else here - sat)
    return out


def render_connections(floor: list[list[CellResult]], tables: list[tuple[bool, list[list[CellResult]]]]) -> str:
    """The floor's cells (``connection_cells``), then what modelapi's successful requests cost more in the overload
    cells than at saturation, the same way: beside each other, how much of the loss is the platform's."""
    lines = [
        "| connections | x saturation | answers/s, each round | vs its own saturated cell, each round | median | "
        "CPU us an answer, each round | more than saturated (median) |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for i in range(len(floor[0])):
        x = f"{floor[0][i].connections / floor[0][0].connections:.0f}x"
        rates = " / ".join(f"{r[i].ok_rps:,.0f}" for r in floor)
        ratios = _ok_ratios(floor, i)
        cpu = " / ".join("-" if (u := served_us(r[i])) is None else f"{u:.0f}" for r in floor)
        more = _median(_more_us(floor, i))[0] if i else None
        lines.append(
            f"| {floor[0][i].connections} | {x} | {rates} | {' / '.join(_share(v) for v in ratios)} | "
            f"{_share(_median(ratios)[0])} | {cpu} | {'-' if more is None else f'{more:+.0f}'} |"
        )
    lines.append("")
    cells = [c for r in floor for c in r]
    # the floor answers every request: anything else (a timeout, a 5xx) would leave its cells' answers/s short unseen
    bad = sorted({s for c in cells for s in c.statuses} - {200})
    errors = sum(c.socket_errors for c in cells)
    lines.append(f"the floor's statuses other than 200: {bad or 'none'}; socket errors: {errors}")
    for honour, rounds in tables:
        kind = "clients that wait" if honour else "clients that retry at once"
        each = []
        for i in range(1, len(rounds[0])):
            more, of = _median(_more_us(rounds, i))
            x = f"{rounds[0][i].connections / rounds[0][0].connections:.0f}x"
            each.append(f"{'-' if more is None else f'{more:+.0f}'} us at {x}{of}")
        lines.append(f"modelapi, {kind}: CPU per successful request more than saturated (median): {', '.join(each)}")
    return "\n".join(lines)


def render_refusals(cells: list[tuple[str, CellResult]], served: float | None) -> str:
    """``served``: the CPU per served request the refusals are compared with; ``None`` if no saturated cell
    served one (then no ratio, and the target fails)."""
    lines = [
        "| server | connections | answers/s | status mix | server CPU us/answer | vs a served request | "
        "server CPU % of its core |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for label, c in cells:
        answers = sum(c.statuses.values())
        mix = ", ".join(f"{s}: {n:,}" for s, n in sorted(c.statuses.items()))
        per = c.cpu_s / max(answers, 1) * 1e6
        # under 100 %, the load (wrk's one core) was the limit, not the server: its CPU per answer was taken at a
        # lighter load than a saturated row's
        vs = "-" if served is None else f"{per / served:.3f}"  # (0.104 is over the tenth; ".2f" showed 0.10)
        lines.append(
            f"| {label} | {c.connections} | {answers / c.seconds:,.0f} | {mix} | {per:.0f} | {vs} | "
            f"{c.cpu_s / c.seconds:.0%} |"
        )
    c = cells[0][1]  # the default configuration's
    share = None if served is None else c.cpu_s / max(sum(c.statuses.values()), 1) * 1e6 / served
    median = "-" if served is None else f"{served:.0f}"
    lines += ["", f"CPU per served request (the first table's saturated cells, their median): {median} us", ""]
    verdict = "PASS" if share is not None and share <= 0.1 else "FAIL"
    lines.append(
        f"{verdict}  a refusal at most 0.1 of a served request's CPU ({'-' if share is None else f'{share:.3f}'})"
    )
    return "\n".join(lines)


def targets(rounds: list[list[CellResult]]) -> list[str]:
    """The issue's targets (PASS/FAIL): each overload cell against its own round's saturated cell, the median of
    the rounds' ratios (the machine's speed drifts between rounds, less within one); the answers and the probes'
    worst over every cell."""
    out: list[str] = []
    results = [c for r in rounds for c in r]

    def check(ok: bool, text: str) -> None:
        out.append(f"{'PASS' if ok else 'FAIL'}  {text}")

    sat = rounds[0][0]
    for i in range(1, len(rounds[0])):
        x = f"{rounds[0][i].connections / sat.connections:.0f}x"
        share, of = _median(_ok_ratios(rounds, i))
        check(
            share is not None and share >= 0.9,
            f"{x}: successful req/s at least 90 % of saturated ({_share(share)}{of})",
        )
        ratio, of = _median(_p99_ratios(rounds, i))
        check(ratio is not None and ratio <= 2, f"{x}: p99 of successful at most 2x saturated ({_times(ratio)}{of})")
    bad = {s for c in results for s in c.statuses} - ALLOWED
    check(not bad and all(c.socket_errors == 0 for c in results), "only 200/429/503 answers, no socket errors")
    worst = max(c.live_max_ms for c in results)
    check(worst <= 100, f"/v2/health/live within 100 ms throughout (worst {worst:.0f} ms)")
    ops = [c.ops_max_ms for c in results if c.ops_max_ms is not None]
    if ops:  # the kubelet's probes: a new connection each, on the operations port (deploy/kubernetes.py)
        check(
            max(ops) <= 100,
            f"/v2/health/live on a new connection to the operations port within 100 ms throughout (worst "
            f"{max(ops):.0f} ms; on the main port {max(c.fresh_max_ms or 0 for c in results):.0f} ms)",
        )
    return out


def queue_budget_ms(p99s: list[float | None]) -> float | None:
    """The queue budget of an operator who promises the saturated latency: the median p99 of the calibration
    cells' successful requests (a cell without one left out), in whole milliseconds, at least 1; ``None`` when no
    cell had one (a server that serves nothing: its overload cells fail whatever the budget)."""
    known = [p for p in p99s if p is not None]
    if not known:
        return None
    return float(max(1, round(statistics.median(known))))


def calibrate(
    work: workload.Workload, body: workload.Body, args: argparse.Namespace
) -> tuple[float | None, list[float | None]]:
    """The queue budget (``queue_budget_ms``) and the p99s it comes from: saturated cells of clients that wait,
    on a server with the default budget, which refuses nothing at saturation."""
    spec = servers.modelapi("modelapi calibration", [work.model_path], "--keep-alive", "60", *args.server_args.split())
    with servers.serve(spec, core=SERVER_CORE, env=dict(os.environ), log_dir=RESULTS) as srv:
        cell(srv, body, args.saturate, 2, False)  # warm-up
        p99s = [cell(srv, body, args.saturate, args.seconds, True).ok_p99_ms for _ in range(CALIBRATION_CELLS)]
    return queue_budget_ms(p99s), p99s


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--saturate", type=int, default=64, help="connections that saturate the server")
    parser.add_argument(
        "--max-queue-ms",
        type=float,
        help="the server's queue budget (default: the p99 of successful requests at saturation, measured first)",
    )
    parser.add_argument("--factors", default="10,30", help="overload cells, as multiples of --saturate")
    parser.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="rounds of the saturated and overload cells for each kind of client; the targets take the median of "
        "the rounds' ratios (default 3)",
    )
    parser.add_argument(
        "--server-args",
        default="",
        help="more options for the server, e.g. '--pacing-slice-ms 0' (an A/B run: give --max-queue-ms too, so that "
        "both sides have the same budget)",
    )
    parser.add_argument("--probe", help=argparse.SUPPRESS)  # the probe process (_probe_process)
    parser.add_argument("--probe-body", help=argparse.SUPPRESS)
    parser.add_argument("--probe-type", default="application/json", help=argparse.SUPPRESS)
    parser.add_argument("--probe-honour", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--probe-fresh", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.probe:
        return _run_probe(args)
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    if "--max-queue-ms" in args.server_args.split():
        parser.error("give the queue budget with --max-queue-ms, not in --server-args")
    os.sched_setaffinity(0, {LOAD_CORE})  # the probes share wrk's core, never the server's
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    with tempfile.TemporaryDirectory(prefix="modelapi-overload-") as tmp:
        work = workload.build(Path(tmp), (ROWS,))
        body = work.body("v2-json", ROWS)
        RESULTS.mkdir(exist_ok=True)
        budget, calibrated = args.max_queue_ms, None
        if budget is None:
            budget, calibrated = calibrate(work, body, args)
        budget_text = "the server's default" if budget is None else f"{budget:g}"
        if calibrated is not None:
            shown = ", ".join("-" if p is None else f"{p:.1f}" for p in calibrated)
            budget_text += f" (the p99 of successful requests at saturation, median of {shown} ms)"
            print(f"queue budget: {budget_text}", flush=True)
        ops_port = servers.free_port()  # the operations port, probed on new connections beside the main one
        # keep-alive past the longest wait a client may be told (MAX_RETRY_AFTER_S, plus the jitter): a connection
        # the server closed while its client slept makes wrk reconnect, and the reconnect's extra delay() takes
        # another answer's wait (overload.lua)
        extra = (
            *(() if budget is None else ("--max-queue-ms", f"{budget:g}")),
            "--metrics-port", str(ops_port), "--keep-alive", "60", *args.server_args.split(),
        )  # fmt: skip
        spec = servers.modelapi("modelapi overload", [work.model_path], *extra)
        ops = f"http://127.0.0.1:{ops_port}"
        tables: list[tuple[bool, list[list[CellResult]]]] = []
        with servers.serve(spec, core=SERVER_CORE, env=dict(os.environ), log_dir=RESULTS) as srv:
            cell(srv, body, args.saturate, 2, False)  # warm-up
            for honour in (True, False):
                rounds = []
                for _ in range(args.rounds):
                    # a round starts on a server the last flood has left: its schedule of returns and held
                    # retries settle within a second or two once no refusal comes (docs/overload.md)
                    time.sleep(SETTLE_S)
                    results = []
                    for factor in (1, *(int(f) for f in args.factors.split(","))):
                        connections = args.saturate * factor
                        results.append(cell(srv, body, connections, args.seconds, honour, ops=ops))
                        got = results[-1]
                        print(f"{connections} connections: {got.ok_rps:,.0f} OK/s {got.statuses}", flush=True)
                    rounds.append(results)
                tables.append((honour, rounds))
        counts = (args.saturate, *(args.saturate * int(f) for f in args.factors.split(",")))
        floor = connection_cells(work.model_path, work.body("rest", ROWS), counts, args.seconds, args.rounds)
        more = tuple(args.server_args.split())  # not the cells' queue budget (refusal_cells)
        refusals = refusal_cells(body, work.model_path, args.saturate * 10, args.seconds, more)
    meta = {
        "when": stamp,
        "command": "python -m bench.overload " + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": f"{os.cpu_count()} cores, server on core {SERVER_CORE}, wrk and probes on core {LOAD_CORE}; "
        f"load average before: {os.getloadavg()[0]:.2f}",
        "workload": f"V2 JSON, {ROWS} rows a request, the bench's logistic regression; --max-queue-ms {budget_text}"
        ", --metrics-port (the operations port), --keep-alive 60 (past the longest Retry-After)"
        f"{', ' + args.server_args if args.server_args else ''}, other limits at their defaults",
    }
    text = "\n".join(f"- {k}: {v}" for k, v in meta.items())
    for honour, rounds in tables:
        title = (
            "clients that wait Retry-After (+0-50 % jitter) after a 503"
            if honour
            else "clients that retry at once (wrk's default)"
        )
        text += f"\n\n### {title}\n\n" + render_rounds(rounds)
    text += "\n\n### what many connections cost without modelapi: the HTTP floor, nothing refused\n\n"
    text += render_connections(floor, tables)
    served = [s for r in tables[0][1] if (s := served_us(r[0])) is not None]  # rounds whose saturated cell served
    text += "\n\n### what a refusal costs: every request refused on its head\n\n"
    text += render_refusals(refusals, statistics.median(served) if served else None)
    print(text)
    (RESULTS / f"overload-{stamp}.md").write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
