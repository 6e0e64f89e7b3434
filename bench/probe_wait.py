"""Where a new-connection probe's time goes under a flood: main port against the operations port (--metrics-port).

The server runs as in ``bench.overload`` (core 0, ``--max-queue-ms 20``: the cell's budget before it was measured)
with two things added in its process
(``--server``, which then runs ``modelapi serve``): a watchdog on its event loop (a callback every 5 ms that
records how late it ran: the longest turn of the loop) and timestamps on the operations port's connections
(``connection_made``, the handler's start, the request head read; the handler is the protocol itself since it
answers from ``data_received``, and a stream handler's task before: both are timed, for an A/B run against the
version before) and on every connection the main port accepts (``connection_made``). Then, ``--rounds`` times: wrk opens
``--connections`` connections at once, each sending the overload cell's request as soon as the last is
answered (``overload.lua``, no Retry-After), while two probes, one per port, each open a new connection for
every ``GET /v2/health/live`` (every 20 ms), as the kubelet's probes do. All clocks are ``CLOCK_MONOTONIC``.

    python -m bench.probe_wait [--rounds 3] [--connections 1920] [--seconds 4] [--loop auto|asyncio]
"""

from __future__ import annotations

import argparse
import http.client
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson

from . import servers, workload
from .loadgen import require
from .overload import LOAD_CORE, RESULTS, ROWS, SCRIPT, SERVER_CORE, cell

LIVE = "/v2/health/live"


def _server(out: Path, argv: list[str], loop_name: str) -> int:
    """``modelapi serve ARGV`` with the watchdog and the timestamps, written to ``out`` every second (the harness
    stops the server with SIGTERM and kills it if its drain outlasts 10 s, and reads them afterwards); on
    uvicorn's ``loop_name`` loop ("auto" is uvloop)."""
    import asyncio

    import uvicorn.config

    from modelapi import cli
    from modelapi.http import ops
    from modelapi.security.slow_clients import GuardedHttpToolsProtocol

    made: dict[int, float] = {}  # the operations port's connections, by the client's port
    started: dict[int, float] = {}
    read: dict[int, float] = {}
    main: list[tuple[float, int]] = []  # the main port's connections: when, the client's port
    late: list[tuple[float, float]] = []  # (when the callback was due, how late it ran)

    # modelapi leaves uvicorn's loop at "auto"; the bench's --loop asyncio makes "auto" asyncio's
    uvicorn.config.LOOP_FACTORIES["auto"] = uvicorn.config.LOOP_FACTORIES[loop_name]
    main_made = GuardedHttpToolsProtocol.connection_made

    def main_made_at(self: GuardedHttpToolsProtocol, transport: asyncio.Transport) -> None:
        main.append((time.monotonic(), transport.get_extra_info("peername")[1]))
        main_made(self, transport)

    GuardedHttpToolsProtocol.connection_made = main_made_at  # type: ignore[method-assign]
    connection = getattr(ops, "_Connection", None)
    if connection is not None:  # the health routes answered from the protocol's data_received
        ops_made, received = connection.connection_made, connection.data_received

        def ops_made_at(self: Any, transport: asyncio.BaseTransport) -> None:
            peer = transport.get_extra_info("peername")[1]
            made[peer] = started[peer] = time.monotonic()  # no handler task to start
            ops_made(self, transport)

        def received_at(self: Any, data: bytes) -> None:
            received(self, data)
            peer = self.transport.get_extra_info("peername")[1]
            if self.timer is None and peer not in read:  # the head is in (and a health route answered)
                read[peer] = time.monotonic()

        connection.connection_made = ops_made_at
        connection.data_received = received_at
    else:  # the version before: a stream handler's task per connection
        stream_made = asyncio.StreamReaderProtocol.connection_made

        def made_at(self: asyncio.StreamReaderProtocol, transport: asyncio.BaseTransport) -> None:
            made[transport.get_extra_info("peername")[1]] = time.monotonic()
            stream_made(self, transport)

        asyncio.StreamReaderProtocol.connection_made = made_at  # type: ignore[method-assign, assignment]
        handler = ops._handler  # type: ignore[attr-defined]

        def timed(health: ops.Health) -> Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]:
            inner = handler(health)

            async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
                peer = writer.get_extra_info("peername")[1]
                started[peer] = time.monotonic()
                readuntil = reader.readuntil

                async def read_head(separator: bytes = b"\n") -> bytes:
                    got = await readuntil(separator)
                    read[peer] = time.monotonic()
                    return got

                reader.readuntil = read_head  # type: ignore[method-assign, assignment]
                await inner(reader, writer)

            return handle

        ops._handler = timed  # type: ignore[attr-defined]
    serve = ops.serve

    async def watched(sock: Any, health: ops.Health) -> ops.Server:
        loop = asyncio.get_running_loop()

        def tick(due: float) -> None:
            now = time.monotonic()
            late.append((due, now - due))
            loop.call_later(0.005, tick, now + 0.005)

        loop.call_later(0.005, tick, time.monotonic() + 0.005)
        return await serve(sock, health)

    ops.serve = watched

    def dump() -> None:
        # copies taken under the GIL, while the loop appends
        got = {"made": dict(made), "started": dict(started), "read": dict(read), "main": list(main), "late": list(late)}
        partial = out.with_suffix(".partial")
        partial.write_bytes(orjson.dumps(got, option=orjson.OPT_NON_STR_KEYS))
        partial.replace(out)

    def dump_every_second() -> None:
        while True:
            time.sleep(1)
            dump()

    threading.Thread(target=dump_every_second, daemon=True).start()
    code = cli.main(argv)
    dump()
    return code


Call = tuple[float, float, float, int]  # started, connected, answered (monotonic), the client's port


def _probe(url: str, stop: threading.Event, calls: list[Call]) -> None:
    """New-connection GETs of ``url`` every 20 ms until ``stop``."""
    host, port = url.split("//", 1)[1].split(":")
    while not stop.is_set():
        t0 = time.monotonic()
        conn = http.client.HTTPConnection(host, int(port), timeout=30)
        try:
            conn.connect()
            t1 = time.monotonic()
            assert conn.sock is not None
            port_used = conn.sock.getsockname()[1]
            conn.request("GET", LIVE, headers={"connection": "close"})
            r = conn.getresponse()
            r.read()
            assert r.status == 200, r.status
        finally:
            conn.close()
        calls.append((t0, t1, time.monotonic(), port_used))
        stop.wait(0.02)


def _queue(port: int, stop: threading.Event, samples: list[tuple[float, int]]) -> None:
    """The main port's accept queue (connections the kernel completed, not yet accepted: ``ss``'s Recv-Q of the
    listener) every 50 ms until ``stop``."""
    while not stop.is_set():
        out = subprocess.run(["ss", "-Hltn", f"sport = :{port}"], capture_output=True, text=True, check=False).stdout
        fields = out.split()
        if len(fields) > 1 and fields[1].isdigit():
            samples.append((time.monotonic(), int(fields[1])))
        stop.wait(0.05)


def _late_max(late: list[tuple[float, float]], start: float, end: float) -> float:
    return max((lateness for due, lateness in late if start <= due <= end), default=0.0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=1920)
    parser.add_argument("--seconds", type=int, default=4)
    parser.add_argument(
        "--loop",
        choices=("auto", "asyncio"),
        default="auto",
        help="the server's event loop: auto (uvloop, as modelapi runs) or asyncio's, which accepts every pending "
        "connection when its listener is ready (uvloop's libuv accepts one a loop iteration)",
    )
    parser.add_argument("--server", type=Path, help=argparse.SUPPRESS)  # the server process: --server OUT -- ARGS
    args, rest = parser.parse_known_args(argv)
    if args.server is not None:
        return _server(args.server, rest[1:] if rest[:1] == ["--"] else rest, args.loop)
    os.sched_setaffinity(0, {LOAD_CORE})
    wrk = require("wrk", "install it with: apt-get install -y wrk")
    RESULTS.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="modelapi-probe-wait-") as tmp:
        work = workload.build(Path(tmp), (ROWS,))
        body = work.body("v2-json", ROWS)
        out = Path(tmp) / "server.json"
        ops_port = servers.free_port()
        argv_server = (
            sys.executable, "-m", "bench.probe_wait", "--server", str(out), "--loop", args.loop,
            "--", "serve", str(work.model_path),
            "--host", "127.0.0.1", "--port", "{port}", "--max-queue-ms", "20", "--metrics-port", str(ops_port),
        )  # fmt: skip
        spec = servers.ServerSpec("modelapi probe wait", argv_server, "/v2/health/ready")
        rounds: list[tuple[float, float, list[Call], list[Call], list[tuple[float, int]]]] = []
        with servers.serve(spec, core=SERVER_CORE, env=dict(os.environ), log_dir=RESULTS) as srv:
            cell(srv, body, 64, 2, False)  # warm-up
            ops_url = f"http://127.0.0.1:{ops_port}"
            for _ in range(args.rounds):
                stop = threading.Event()
                main_calls: list[Call] = []
                ops_calls: list[Call] = []
                queue: list[tuple[float, int]] = []
                threads = [
                    threading.Thread(target=_probe, args=(srv.url, stop, main_calls)),
                    threading.Thread(target=_probe, args=(ops_url, stop, ops_calls)),
                    threading.Thread(target=_queue, args=(srv.port, stop, queue)),
                ]
                for t in threads:
                    t.start()
                time.sleep(0.5)
                flood = time.monotonic()
                cmd = [
                    wrk, "-t", "1", "-c", str(args.connections), "-d", f"{args.seconds}s", "--timeout", "10s",
                    "-s", str(SCRIPT), srv.url + "/v2/models/logreg/infer", "--", str(body.path), body.content_type, "",
                ]  # fmt: skip
                subprocess.run(cmd, capture_output=True, timeout=args.seconds + 60, check=True)
                flood_end = time.monotonic()
                time.sleep(0.5)
                stop.set()
                for t in threads:
                    t.join(60)
                rounds.append((flood, flood_end, main_calls, ops_calls, queue))
            time.sleep(2)  # the server's next dump of its timestamps
        got = orjson.loads(out.read_bytes())
    made, started, read, late = got["made"], got["started"], got["read"], got["late"]
    ms = 1000.0
    lines = [
        "| round | main port: worst ms | of it: waiting to be accepted, ms (connections accepted since the flood "
        "began, before it) | operations port: worst ms | of it: connect / accepted (connection_made) / handler "
        "started / head read / answered, ms | the loop's longest turn during that call, ms | the loop's longest turn "
        "in the flood, ms | main port: the flood's connections accepted, ms after it began (first / half / last) | "
        "main port: the longest accept queue (ss Recv-Q), and for how long it held over 100, ms |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for i, (flood, flood_end, main_calls, ops_calls, queue) in enumerate(rounds, 1):
        # wrk's connections only: not the probe's, each of which is accepted during its own call
        probe = [(t0, t2, port) for t0, _, t2, port in main_calls]
        flood_accepts = sorted(
            when - flood
            for when, port in got["main"]
            if flood <= when <= flood_end and not any(p == port and t0 <= when <= t2 for t0, t2, p in probe)
        )
        spread = " / ".join(f"{flood_accepts[k] * ms:,.0f}" for k in (0, len(flood_accepts) // 2, -1))
        long_queue = [when for when, n in queue if n > 100]
        held = (max(long_queue) - min(long_queue)) * ms if long_queue else 0.0
        queued = f"{max((n for _, n in queue), default=0):,} ({held:,.0f})"
        t0, t1, t2, port = max(main_calls, key=lambda c: c[2] - c[0])
        # the first connection from that port accepted after the call began (a port comes back in later calls)
        m = min(when for when, p in got["main"] if p == port and when >= t0)
        before = sum(1 for when, _ in got["main"] if flood <= when < m)
        main_part = f"{(m - t1) * ms:,.1f} ({before:,})"
        worst_main = t2 - t0
        t0, t1, t2, port = max(ops_calls, key=lambda c: c[2] - c[0])
        m, s, r = made[str(port)], started[str(port)], read[str(port)]
        steps = (t1 - t0, m - t1, s - m, r - s, t2 - r)
        parts = " / ".join(f"{step * ms:.1f}" for step in steps)
        lines.append(
            f"| {i} | {worst_main * ms:,.1f} | {main_part} | {(t2 - t0) * ms:,.1f} | {parts} | "
            f"{_late_max(late, t0, t2) * ms:.1f} | {_late_max(late, flood, flood_end) * ms:.1f} | {spread} | {queued} |"
        )
    text = "\n".join(lines)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
