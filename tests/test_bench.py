"""The bench's own logic, with its servers, wrk and /proc faked (no bench runs here): bench/paired.py's rounds
(the order of a round's cells, each target's pairs from one round, the other load of every cell), bench/run.py's
options, and the verdict of part B of bench/scaling.py (bench/gpu_batching.py); the socket floor, and the
overload cell's wrk script against a small server of the test's own."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from bench import cells, gpu_batching, loadgen, paired, report, workload  # the checkout's root: tests/conftest.py

#: CPU seconds each contender's 2 s cell takes in rounds 1, 2 and 3: the machine slows down twice as much in each
#: round, and modelapi takes 1.2x the floor's CPU in every round, its key 1.1x modelapi's
CPU = {report.FLOOR: (0.5, 1.0, 2.0), "modelapi": (0.6, 1.2, 2.4), report.PRODUCTION: (0.66, 1.32, 2.64)}
OTHER_S = 0.4  # what other processes take of the server's core in each 2 s cell: 20 %


def test_rounds_alternate_the_cells_pair_them_by_round_and_note_the_other_load(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    clock = {"cpu": 0.0, "core": 0.0}
    measured: list[tuple[str, int]] = []

    @contextlib.contextmanager
    def serve(spec: Any, **_: Any) -> Iterator[Any]:
        yield SimpleNamespace(host="127.0.0.1", port=1, url=spec.name, process=SimpleNamespace(pid=1))

    def run_wrk(url: str, body: workload.Body, *, connections: int, seconds: int, **_: Any) -> loadgen.Cell:
        if connections == 1:
            measured.append((url, body.rows))
            rounds_done = sum(1 for u, n in measured if u == url and n == body.rows) - 1
            clock["cpu"] += CPU[url][rounds_done]
            clock["core"] += CPU[url][rounds_done] + OTHER_S
        p50 = 1.0 if url == report.FLOOR else 1.1
        return loadgen.Cell(requests=1000, seconds=2.0, rows_per_request=body.rows, p50_ms=p50, p99_ms=3.0, errors=0)

    monkeypatch.setattr(paired.servers, "serve", serve)
    monkeypatch.setattr(paired.verify, "check", lambda *a, **k: None)
    monkeypatch.setattr(paired, "run_wrk", run_wrk)
    monkeypatch.setattr(paired.procfs, "tree", lambda pid: [pid])
    monkeypatch.setattr(paired.procfs, "cpu_seconds", lambda pids: clock["cpu"])
    monkeypatch.setattr(paired.procfs, "core_busy_seconds", lambda core: clock["core"])

    specs = [SimpleNamespace(name=name, client_headers={}) for name in CPU]
    cells = []
    for n in (1, 32):
        body = workload.Body("rest", n, tmp_path / f"{n}.json", "application/json")
        cells.append(paired.Cell(report.FLOOR, "/predict", "", body))
        cells += [paired.Cell(name, "friendly JSON", "", body) for name in ("modelapi", report.PRODUCTION)]
    rounds = paired.measure(
        specs, cells, {1: None, 32: None}, rounds=3, seconds=2, warmup=1, env={}, log_dir=tmp_path,  # type: ignore[arg-type]
        log=lambda _: None,
    )  # fmt: skip

    # each round: the floor first, then the others, for 1 and then 32 rows
    one_round = [(name, n) for n in (1, 32) for name in CPU]
    assert measured == one_round * 3
    # each target is the median of each round's ratio to the same round's floor (or default): 1.2x and 1.1x
    targets = {t.name: t for t in report.targets([], {}, 0, rounds)}
    floor = targets["modelapi friendly JSON 1-row c1 vs HTTP floor: CPU/req (median of 3 paired rounds)"]
    assert floor.value == pytest.approx(1.2) and floor.passed
    p50 = targets["modelapi friendly JSON 32-row c1 vs HTTP floor: p50 above the floor's (median of 3 paired rounds)"]
    assert p50.value == pytest.approx(0.1) and p50.passed
    key = targets["modelapi, key + metrics vs default: friendly JSON 1-row c1 CPU/req (median of 3 paired rounds)"]
    assert key.value == pytest.approx(1.1) and key.passed
    # the table's rows: the medians of the rounds, the other load (20 % of the core) included, as for every cell
    rows = paired.medians(rounds)
    assert len(rows) == 6 and all(r.concurrency == 1 for r in rows)
    floor1 = report.find(rows, report.FLOOR, "/predict", 1, 1)
    assert floor1 is not None and floor1.cpu_us_per_req == pytest.approx(1000.0)  # 1.0 s over 1,000 requests
    assert all(r.other_load_pct == pytest.approx(20.0) for r in rows)
    assert sum("other processes took 20% of the server's core" in w for w in report.warnings(rows)) == 6


@pytest.mark.parametrize("rounds", ["0", "-1"])
def test_no_round_is_refused_before_anything_runs(
    rounds: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without a round, the one-connection cells have no row: their targets, and ``--workers``' p50 target, would
    go missing from the results without a word."""
    from bench import run

    monkeypatch.setattr(run, "run", lambda *_: pytest.fail("the bench started"))  # never a bench in the tests
    with pytest.raises(SystemExit) as exit_info:
        run.main(["--rounds", rounds])
    assert exit_info.value.code == 2
    assert f"--rounds {rounds}: expected 1 or more rounds" in capsys.readouterr().err


def _cell(label: str, rps: float, errors: int = 0) -> cells.Result:
    return cells.Result("B", label, 1, 64, rps, rps, 10.0, 20.0, errors, 100.0, 1)


@pytest.mark.parametrize(
    ("on", "off", "device", "verdict"),
    [
        (_cell("on", 2000.0), _cell("off", 100.0), "cuda", "PASS, 20.00x (2,000 against 100 req/s)"),
        (_cell("on", 1999.0), _cell("off", 100.0), "cuda:0", "FAIL, 19.99x"),
        (_cell("on", 4000.0, errors=3), _cell("off", 100.0), "cuda", "FAIL, 40.00x"),
        (_cell("on", 4000.0), _cell("off", 100.0), "cpu", "not judged, since part B ran on cpu"),
        (_cell("on", 4000.0), None, "cuda", "FAIL, the batching on and off cells did not both run."),
        # it ran, and every request failed: not a cell that did not run
        (_cell("on", 4000.0), _cell("off", 0.0, errors=640), "cuda", "FAIL, batching off answered no request within "
         "the cell (640 errors)."),
    ],
)  # fmt: skip
def test_part_bs_verdict(on: cells.Result, off: cells.Result | None, device: str, verdict: str) -> None:
    line = gpu_batching.verdict(on, off, device)
    assert line.startswith("Target (batching on serves at least 20x the req/s of batching off")
    assert verdict in line


def test_an_answer_without_the_output_checked_is_a_wrong_answer_not_a_crash() -> None:
    """A server whose answer lacks the output, or is no V2 answer (or no friendly route's answer), fails its check
    (``WrongAnswer``, which the parts catch per server), not the whole part with a ``KeyError``."""
    from bench import verify

    answer = b'{"outputs": [{"name": "logits", "datatype": "FP32", "shape": [1], "data": [0.5]}]}'
    assert verify.v2_outputs({}, answer)["logits"].tolist() == [0.5]
    with pytest.raises(verify.WrongAnswer, match="no output 'probabilities'"):
        verify.v2_outputs({}, answer, ("probabilities",))
    with pytest.raises(verify.WrongAnswer, match="not a V2 answer"):
        verify.v2_outputs({}, b'{"error": "overloaded"}')
    with pytest.raises(verify.WrongAnswer, match="not a V2 answer"):
        verify.v2_outputs({"inference-header-content-length": "x"}, answer)
    with pytest.raises(verify.WrongAnswer, match="not a V2 answer"):
        verify.v2_outputs({}, b'{"outputs": ["probabilities"]}')
    for records in (b"[1, 2]", b'{"predictions": [{"label": 1}]}', b"<html>busy</html>"):
        with pytest.raises(verify.WrongAnswer, match="not a friendly route's answer"):
            verify.parse("rest", {}, records)


def test_a_wrong_answer_names_the_server_and_path(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """``verify.check``'s message for an unreadable answer says whose answer it was, as for a wrong one."""
    from bench import verify, workload

    monkeypatch.setattr(verify, "post", lambda *args, **kwargs: (200, {}, b'{"error": "overloaded"}'))
    body = workload.Body("v2-json", 1, tmp_path / "body.json", "application/json")
    want = workload.Answer(np.array([0]), np.array([[1.0]]))
    with pytest.raises(verify.WrongAnswer, match=r"^srv /v2/models/m/infer \(v2-json, 1 rows\): not a V2 answer"):
        verify.check("srv", "/v2/models/m/infer", "127.0.0.1", 1, body, want)


def test_the_socket_floor_answers_every_request_on_a_kept_connection(tmp_path: Path) -> None:
    """The refusal cost's yardstick (bench/socket_floor.py) answers each request, pipelined ones included, with
    its constant answer, and its health path with 200 for the bench's readiness wait; a URL or body split over
    reads is one request, answered once it is all in, and ``Connection: close`` closes after the answer."""
    import http.client
    import socket
    import subprocess
    import sys
    import time

    from bench import servers, socket_floor

    port = servers.free_port()
    root = Path(__file__).resolve().parents[1]
    proc = subprocess.Popen([sys.executable, "-m", "bench.socket_floor", "--port", str(port)], cwd=root)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                conn.request("GET", "/health")
                break
            except OSError:
                assert time.monotonic() < deadline and proc.poll() is None
                time.sleep(0.05)
        health = conn.getresponse()
        assert (health.status, health.read()) == (200, b"ok")
        for _ in range(2):
            conn.request("POST", "/v2/models/logreg/infer", body=b'{"inputs": []}' * 100)
            refused = conn.getresponse()
            assert refused.status == 503 and refused.getheader("retry-after") == "1" and b"overloaded" in refused.read()
        conn.close()
        with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:  # two requests in one write
            one = b"POST /x HTTP/1.1\r\nhost: t\r\ncontent-length: 3\r\n\r\nabc"
            raw.sendall(one * 2)
            got = b""
            while got.count(b"HTTP/1.1 503") < 2:
                chunk = raw.recv(65536)
                assert chunk, got
                got += chunk
        with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
            # a URL and a body split over reads: one answer each, the body's only once it is all in
            for part in (b"GET /hea", b"lth HTTP/1.1\r\nhost: t\r\n\r\n", b"POST /x HTTP/1.1\r\nhost: t\r\n"):
                raw.sendall(part)
                time.sleep(0.1)
            raw.sendall(b"content-length: 6\r\nconnection: close\r\n\r\nabc")
            time.sleep(0.1)
            got = b""
            while len(got) < len(socket_floor.HEALTH) and (chunk := raw.recv(65536)):
                got += chunk
            raw.settimeout(0.3)
            with contextlib.suppress(TimeoutError):  # nothing for the body's first half
                got += raw.recv(65536)
            assert got == socket_floor.HEALTH, got
            raw.settimeout(5)
            raw.sendall(b"def")
            while chunk := raw.recv(65536):  # its Connection: close ends the connection after the answer
                got += chunk
            assert got == socket_floor.HEALTH + socket_floor.REFUSAL
    finally:
        proc.kill()
        proc.wait()


def test_the_refusal_table_says_how_busy_each_server_was() -> None:
    """A yardstick that the load generator could not saturate (the socket floor) shows it: its CPU per answer
    was taken at a lighter load than the saturated rows'."""
    from bench import overload

    def refused(answers: int, cpu_s: float) -> overload.CellResult:
        return overload.CellResult(640, 5.0, {503: answers}, 0, 1.0, 2.0, None, 0, cpu_s, 1.0, 2.0)

    text = overload.render_refusals([("default", refused(58_650, 5.0)), ("socket floor", refused(153_705, 2.3))], 231)
    rows = [line for line in text.splitlines() if line.startswith(("| default", "| socket floor"))]
    assert rows[0].endswith("| 85 | 0.369 | 100% |"), rows[0]
    assert rows[1].endswith("| 15 | 0.065 | 46% |"), rows[1]


def test_a_refusal_just_over_the_tenth_reads_as_over_it() -> None:
    """31 us against 299 us is 0.104: the verdict fails, and its figure says why (two decimals read "0.10")."""
    from bench import overload

    cell = overload.CellResult(640, 10.0, {503: 322_581}, 0, 1.0, 2.0, None, 0, 10.0, 1.0, 2.0)
    text = overload.render_refusals([("default", cell)], 299)
    assert "FAIL  a refusal at most 0.1 of a served request's CPU (0.104)" in text


def _overload_cell(connections: int, ok: int, p99: float | None, live: float = 10.0) -> Any:
    from bench import overload

    return overload.CellResult(
        connections, 5.0, {200: ok, 503: 100}, 0, 1.0, 2.0, p99, 50, 1.0, 1.0, live, 20.0, 1.0, 20.0, 1.0
    )


def test_the_overload_targets_take_the_median_of_each_rounds_ratio_to_its_own_saturated_cell() -> None:
    """A round whose saturated cell ran on a slowed machine (its overload cells 150 % of it) does not decide the
    verdict: each overload cell is compared with its own round's saturated cell and the rounds' median counts."""
    from bench import overload

    rounds = [
        [_overload_cell(64, 1000, 10.0), _overload_cell(640, 950, 15.0), _overload_cell(1920, 920, 30.0)],
        [_overload_cell(64, 600, 10.0), _overload_cell(640, 900, 12.0), _overload_cell(1920, 900, 14.0)],
        [_overload_cell(64, 1000, 10.0), _overload_cell(640, 850, 25.0), _overload_cell(1920, 930, None)],
    ]
    lines = overload.targets(rounds)
    # 10x: 95 %, 150 %, 85 %; 30x: 92 %, 150 %, 93 %; p99 1.5x, 1.2x, 2.5x and 3.0x, 1.4x and a round whose
    # sampling client never got an answer through (the worst of the three, not left out)
    assert "PASS  10x: successful req/s at least 90 % of saturated (95% (median of 3 rounds))" in lines
    assert "PASS  30x: successful req/s at least 90 % of saturated (93% (median of 3 rounds))" in lines
    assert "PASS  10x: p99 of successful at most 2x saturated (1.50x (median of 3 rounds))" in lines
    assert "FAIL  30x: p99 of successful at most 2x saturated (3.00x (median of 3 rounds))" in lines
    table = overload.render_rounds(rounds)
    assert "#### round 3 of 3" in table and "| 10x | 95% / 150% / 85% | 95% | 1.50x / 1.20x / 2.50x | 1.50x |" in table
    assert "| 30x | 92% / 150% / 93% | 93% | 3.00x / 1.40x / no OK | 3.00x |" in table  # each round in its place
    one = overload.targets(rounds[:1])  # a single round: its own ratios, no median named
    assert "PASS  10x: successful req/s at least 90 % of saturated (95%)" in one


def test_the_overload_cell_refuses_no_round(capsys: pytest.CaptureFixture[str]) -> None:
    """``--rounds 0`` would leave every overload target without a ratio: refused before any server starts."""
    from bench import overload

    with pytest.raises(SystemExit) as exit_info:
        overload.main(["--rounds", "0"])
    assert exit_info.value.code == 2
    assert "--rounds must be at least 1" in capsys.readouterr().err


def test_an_overload_round_whose_saturated_cell_served_nothing_is_named_not_hidden() -> None:
    """A round whose saturated cell served no request has no ratio to give: its tables render ("-" where a ratio
    would be), the medians are of the other rounds and say so, and with no served request anywhere the refusal's
    target has nothing to compare with and fails."""
    from bench import overload

    dead = overload.CellResult(64, 5.0, {503: 100}, 0, 1.0, 2.0, None, 0, 1.0, 1.0, 10.0, 20.0, 1.0, 20.0, 1.0)
    rounds = [
        [_overload_cell(64, 1000, 10.0), _overload_cell(640, 950, 15.0)],
        [dead, _overload_cell(640, 900, 12.0)],
        [_overload_cell(64, 1000, 10.0), _overload_cell(640, 870, 25.0)],
    ]
    table = overload.render_rounds(rounds)
    assert "| 10x | 95% / - / 87% | 91% | 1.50x / - / 2.50x | 2.00x |" in table
    assert "PASS  10x: successful req/s at least 90 % of saturated (91% (median of 2 of 3 rounds))" in table
    assert "CPU per served request (saturated cell): - us" in table
    assert overload.served_us(dead) is None
    refusals = overload.render_refusals([("default", dead)], None)
    assert "FAIL  a refusal at most 0.1 of a served request's CPU (-)" in refusals
    lone = overload.targets([[dead, _overload_cell(640, 900, 12.0)]])
    assert "FAIL  10x: successful req/s at least 90 % of saturated (-)" in lone


def test_an_overload_cell_without_a_successful_sample_fails_its_round() -> None:
    """Where the sampling client got no successful answer in an overload cell, that round fails the p99 target,
    as a single pass did: two such rounds of three fail the median, however well the third did."""
    from bench import overload

    rounds = [
        [_overload_cell(64, 1000, 10.0), _overload_cell(640, 950, 12.0)],
        [_overload_cell(64, 1000, 10.0), _overload_cell(640, 950, None)],
        [_overload_cell(64, 1000, 10.0), _overload_cell(640, 950, None)],
    ]
    assert "FAIL  10x: p99 of successful at most 2x saturated (no OK (median of 3 rounds))" in overload.targets(rounds)
    one = overload.targets(rounds[1:2])
    assert "FAIL  10x: p99 of successful at most 2x saturated (no OK)" in one


def test_a_rounds_table_shows_the_retry_after_answered_and_the_cpu_over_time_of_a_cell_that_idled() -> None:
    """A cell whose server left part of its core idle shows when (its CPU each half second), and every cell
    with refusals shows the Retry-After they carried: together, whether refused clients asleep left too few
    awake."""
    from dataclasses import replace

    from bench import overload

    sat = replace(_overload_cell(64, 1000, 10.0), cpu_s=5.0, cpu_each=(1.0,) * 9)
    idle = replace(
        _overload_cell(640, 800, 15.0), cpu_s=4.1, cpu_each=(1.0, 1.0, 0.6, 0.4, 1.0), retry_after={2: 30, 1: 70}
    )
    busy = replace(_overload_cell(1920, 900, 20.0), cpu_s=5.0, cpu_each=(1.0,) * 9, retry_after={1: 100})
    text = overload.render([sat, idle, busy])
    assert "640 connections, Retry-After answered: 1 s: 70, 2 s: 30" in text
    assert "1920 connections, Retry-After answered: 1 s: 100" in text
    assert "640 connections, the server's CPU each 0.5 s: 100% 100% 60% 40% 100%" in text
    assert "1920 connections, the server's CPU each" not in text and "64 connections, the server's CPU" not in text


def test_the_connections_table_sets_the_floors_loss_beside_modelapis_per_round_and_median() -> None:
    """The HTTP floor's cells at each connection count, each round against its own saturated cell, and how much
    more CPU a successful request took than at saturation, the floor's and modelapi's in the same units: how much
    of the overload cells' loss the platform takes with many connections, nothing refused. A round whose saturated
    cell served nothing has no figure and is left out of the medians, which say so."""
    from dataclasses import replace

    from bench import overload

    def cell(connections: int, answers: int, cpu_s: float, status: int = 200) -> overload.CellResult:
        return replace(_overload_cell(connections, 0, None), statuses={status: answers}, cpu_s=cpu_s)

    floor = [
        [cell(64, 10_000, 5.0), cell(1920, 9_000, 5.0)],  # 500 us an answer, then 556
        [cell(64, 5_000, 5.0), cell(1920, 5_000, 5.0)],  # a slowed round: its own ratio, 100 %
        [cell(64, 10_000, 5.0), cell(1920, 7_000, 5.0)],  # 500, then 714
    ]
    waiting = [  # CPU per successful request, saturated then 30x
        [cell(64, 1000, 1.0), cell(1920, 800, 1.0)],  # 1,000 us, then 1,250
        [cell(64, 500, 1.0), cell(1920, 500, 1.05)],  # a slowed round: 2,000, then 2,100
        [cell(64, 1000, 1.0), cell(1920, 1000, 1.1)],  # 1,000, then 1,100
    ]
    dead = [cell(64, 100, 1.0, status=503), cell(1920, 800, 1.0)]  # its saturated cell served nothing
    text = overload.render_connections(floor, [(True, waiting), (False, [dead, *waiting[:2]])])
    assert "| 1920 | 30x | 1,800 / 1,000 / 1,400 | 90% / 100% / 70% | 90% | 556 / 1000 / 714 | +56 |" in text
    assert "| 64 | 1x | 2,000 / 1,000 / 2,000 | 100% / 100% / 100% | 100% | 500 / 1000 / 500 | - |" in text
    more = "CPU per successful request more than saturated (median)"
    assert f"modelapi, clients that wait: {more}: +100 us at 30x (median of 3 rounds)" in text
    assert f"modelapi, clients that retry at once: {more}: +175 us at 30x (median of 2 of 3 rounds)" in text
    assert "the floor's statuses other than 200: none; socket errors: 0" in text
    timed_out = [[*floor[0][:1], replace(floor[0][1], statuses={200: 9_000, 502: 3}, socket_errors=7)]]
    assert "the floor's statuses other than 200: [502]; socket errors: 7" in overload.render_connections(timed_out, [])


@pytest.mark.parametrize(("connections", "batch_s"), [(64, 0.02), (1000, 0.0)])
def test_the_overload_scripts_clients_each_wait_their_own_retry_after(
    tmp_path: Path, connections: int, batch_s: float
) -> None:
    """wrk with bench/overload.lua's ``honour``, against a server that refuses a random half of its requests with
    ``Retry-After: 1``: a connection refused waits 1-1.5 s before its next request, and one served sends its next
    at once (wrk's Lua state is per thread, so the script pairs waits with answers in the order wrk reads them: a
    served client sleeping on another's refusal hid a burst's idle core as the clients' doing, not the server's).
    Many answers at once (``batch_s``: answers go out together every so often, as a server's batches), and many
    connections answered as they send (the first answers come while wrk still connects the others)."""
    import asyncio
    import os
    import random
    import shutil
    import subprocess
    import time

    from bench.overload import SCRIPT

    wrk = shutil.which("wrk")
    if wrk is None:
        if os.environ.get("CI") == "true":
            pytest.fail("wrk is required in CI (.ci/run installs it)")
        pytest.skip("wrk is not installed (apt-get install -y wrk)")
    body = tmp_path / "body.json"
    body.write_text("{}")
    # each answer's status, and the time from it to the next request on its connection
    gaps: list[tuple[int, float]] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        answered: tuple[int, float] | None = None
        while True:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except (asyncio.IncompleteReadError, ConnectionError):
                break
            now = time.monotonic()
            if answered is not None:
                gaps.append((answered[0], now - answered[1]))
            lines = head.lower().split(b"\r\n")
            length = next((int(line.split(b":")[1]) for line in lines if line.startswith(b"content-length")), 0)
            await reader.readexactly(length)
            # answers go out together: each request is answered after a short pause shared by many connections,
            # as a server's batch is
            if batch_s:
                await asyncio.sleep(batch_s - (time.monotonic() % batch_s))
            status = random.choice((200, 503))
            extra = b"retry-after: 1\r\n" if status == 503 else b""
            writer.write(b"HTTP/1.1 %d X\r\ncontent-length: 0\r\n%s\r\n" % (status, extra))
            answered = (status, time.monotonic())
        writer.close()

    async def main() -> subprocess.CompletedProcess[str]:
        server = await asyncio.start_server(handle, "127.0.0.1", 0, backlog=4096)  # as uvicorn, all connect at once
        port = server.sockets[0].getsockname()[1]
        cmd = [wrk, "-t", "1", "-c", str(connections), "-d", "4s", "-s", str(SCRIPT), f"http://127.0.0.1:{port}/"]
        args = ["--", str(body), "application/json", "honour"]
        proc = await asyncio.create_subprocess_exec(*cmd, *args, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        out, err = await proc.communicate()
        server.close()
        return subprocess.CompletedProcess(cmd, proc.returncode or 0, out.decode(), err.decode())

    done = asyncio.run(main())
    assert done.returncode == 0 and "WRK_JSON" in done.stdout, done.stderr
    after_refusal = [gap for status, gap in gaps if status == 503]
    after_success = [gap for status, gap in gaps if status == 200]
    assert len(after_refusal) > 50 and len(after_success) > 50
    # 1-1.5 s (the jitter), and a loaded machine's lateness; 0, and that lateness
    assert all(0.95 <= gap <= 2.0 for gap in after_refusal), sorted(after_refusal)[:5]
    assert all(gap < 0.5 for gap in after_success), sorted(after_success)[-5:]


def test_the_overload_cells_queue_budget_is_the_saturated_p99_in_whole_milliseconds() -> None:
    """An operator who promises the latency at saturation sets it as the budget: the median of the calibration
    cells' p99 of successful requests (a cell without one left out), rounded, never below 1 ms."""
    from bench import overload

    assert overload.queue_budget_ms([10.8, 12.6, 11.2]) == 11.0
    assert overload.queue_budget_ms([None, 19.4, 21.0]) == 20.0
    assert overload.queue_budget_ms([0.3]) == 1.0
    assert overload.queue_budget_ms([None, None]) is None  # a server that served nothing: its default budget
