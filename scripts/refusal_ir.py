"""Instructions per request through modelapi's HTTP protocol in process, served or refused on the head, counted by
callgrind: ``bench/refusal_cost.py --protocol``'s requests (32-row V2 JSON for the toy iris model, as bytes on one
keep-alive connection of the protocol, a transport that keeps nothing), with the access line at ``info`` to
/dev/null as the server writes it (``logs.configure``: JSON unless ``--log-format text``, buffered lines), one for
every refusal on the head (``--refusals-per-s N`` bounds them as ``access_log_refusals_per_s``; 0 counts a refusal
past the bound, which writes none).

    PYTHONHASHSEED=0 PYTHONPATH=$PWD/src valgrind --tool=callgrind --instr-atstart=no \\
        --toggle-collect=sys_call_tracing --callgrind-out-file=/tmp/cg.out \\
        .venv/bin/python scripts/refusal_ir.py [head|held|served|room] N [--log-level warning] [--log-format text] \\
        [--only F] [--refusals-per-s 0]
    # then: Ir (the "Collected" line) / N

``head``: every request refused on its head (``http/shedding.py``: the model held full, the gate refusing, early retries
not held); ``held``: as ``head``, with early retries held (the default), each request a pair: the refusal, then at once
its retry, which the protocol holds (``HeldRead``: held on the head with ``--refusals-per-s 0``, else by the app) for 60
ms rather than its ``Retry-After`` and then answers, so N pairs (Ir / N: what a client that retries at once costs per
refusal it is told); ``served``: every request served (the model's own predict included); ``room``: as ``served``, with
the gate refusing for good but the model with room, so every head is judged on its read and let through (a served
request under a flood). After a warm-up, the script
turns callgrind's instrumentation on and runs N requests inside ``sys.call_tracing``, the one function whose
instructions are collected (as ``scripts/app_ir.py``). What a flood makes rare is kept out of the count: the access
lines are written as ``PIPE_BUF`` of them fill (their delay is set to 10 s, where a flood fills the buffer long before
its 50 ms), and the rejections warning once, in the warm-up. The lifespan's own timers still run as valgrind's slowness
makes them due, so whole counts move by about 0.5 % between runs.

``--only F``: collect only inside the function(s) F (comma-separated), each wrapped in its own
``sys.call_tracing`` (about 1,000 instructions a call of its own): ``access_line`` or ``scan_headers`` (where the
refusal and the middleware call them), ``refused`` (the rejections reporter's), or a path under ``modelapi``
(``http.shedding.Refusal._answer``, ``logs.LogHandler.write_access``). These counts repeat to a few instructions.
"""

from __future__ import annotations

import asyncio
import gc
import math
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import uvicorn
import uvloop
from uvicorn.server import ServerState

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from bench.refusal_cost import _Wire, request_bytes

from modelapi import logs
from modelapi.http.app import create_app
from modelapi.http.rejections import REPORTER
from modelapi.http.shedding import Shedding
from modelapi.security.slow_clients import protocol_class
from modelapi.settings import Settings
from toymodels import IrisClassifier


def main(kind: str, n: int, log_level: str, log_format: str, only: str | None = None, per_s: str = "unbounded") -> None:
    shedding = Shedding()
    # what depends on the clock is left out of the count, as under a flood, where it is rare: the access lines are
    # written as PIPE_BUF of them fills (a flood fills it long before the delay's timer), and the rejections
    # warning once in the warm-up (a flood's once a second is one in thousands of refusals); and the refusals' lines
    # are not bounded by default (the bound's second would hold as many as valgrind's speed lets in)
    settings = Settings(
        job_workers=0,
        max_inflight=1,
        log_level=log_level,
        log_format=log_format,
        hold_early_retries=kind == "held",
        access_log_flush_ms=10_000,
        access_log_refusals_per_s=per_s,
    )
    REPORTER.interval_s = 3600.0
    logs.configure(settings, stream=open(os.devnull, "w"))  # noqa: SIM115 (for the process's life)
    app: Any = create_app([IrisClassifier()], settings, shedding=shedding)
    raw = request_bytes()
    # as modelapi's server configures uvicorn: no access line of its own, no Server or Date header
    config = uvicorn.Config(
        app, log_config=None, lifespan="off", access_log=False, server_header=False, date_header=False
    )
    config.load()
    loop = uvloop.new_event_loop()
    asyncio.set_event_loop(loop)

    lifespan = app.router.lifespan_context(app)
    loop.run_until_complete(lifespan.__aenter__())
    if kind == "held":
        _hold_briefly()
    if kind == "room":
        gate = app.state.dataplane.gate
        gate.refusing = True  # and for good (no refusal a second ago, ever): every head is judged, and let through
        gate.refused_at = math.inf
    elif kind != "served":
        gate = app.state.dataplane.gate
        gate.inflight["iris"] = 1  # the model full: every request is refused on its head
        gate.refusing = True
    protocol = protocol_class(10.0, 65536, None if kind == "served" else shedding)(
        config=config, server_state=ServerState(), app_state={}
    )
    wire = _Wire()
    protocol.connection_made(wire)

    written: list[asyncio.Future[None]] = []
    write = wire.write

    def wrote(data: Any) -> None:
        write(data)
        if written and not written[0].done():
            written[0].set_result(None)

    wire.write = wrote  # type: ignore[method-assign]

    async def one() -> None:
        before = wire.writes
        protocol.data_received(raw)
        await asyncio.sleep(0)  # a turn of the loop between reads, as a server takes
        if wire.writes == before and kind == "held":  # a held retry's answer waits for its timer: no polling
            written[:] = [loop.create_future()]
            await written[0]
        while wire.writes == before:
            await asyncio.sleep(0)

    async def many(k: int) -> None:
        for _ in range(k):
            await one()
            if kind == "held":
                await one()  # the early retry, held

    loop.run_until_complete(many(300))
    gc.collect()
    instrument = subprocess.Popen(["callgrind_control", "-i", "on", str(os.getpid())], stdout=subprocess.DEVNULL)
    while instrument.poll() is None:  # valgrind turns it on while this process waits
        time.sleep(0.05)
    if only is None:
        sys.call_tracing(loop.run_until_complete, (many(n),))
    else:
        _collect_only(only)
        loop.run_until_complete(many(n))
    protocol.connection_lost(None)
    loop.run_until_complete(lifespan.__aexit__(None, None, None))
    print(f"{kind}: {n} {'pairs' if kind == 'held' else 'requests'} counted")


def _hold_briefly() -> None:
    """Every refusal's early retry held 60 ms instead of its ``Retry-After`` (seconds): the same steps, sooner."""
    from modelapi.http.holds import RetryHolds

    refused = RetryHolds.refused

    def briefly(self: RetryHolds, client: Any, path: str, retry_after: bytes) -> None:
        refused(self, client, path, retry_after)
        if (client, path) in self.until:
            self.until[(client, path)] = self.clock() + 0.06

    RetryHolds.refused = briefly  # type: ignore[method-assign]


def _collect_only(names: str) -> None:
    """Collect only inside the named functions, each wrapped in ``sys.call_tracing``: ``access_line``,
    ``scan_headers`` (where the refusal and the middleware call them), ``refused`` (the rejections reporter's), or
    a dotted path under ``modelapi`` (``logs.LogHandler.write_access``, ``http.access._own_handler``)."""
    import importlib

    from modelapi.http import middleware, shedding
    from modelapi.http.rejections import REPORTER

    def traced(function: Any) -> Any:
        def call(*args: Any, **kwargs: Any) -> Any:
            return sys.call_tracing(lambda: function(*args, **kwargs), ())

        return call

    for name in names.split(","):
        if name == "refused":
            REPORTER.refused = traced(REPORTER.refused)  # type: ignore[method-assign]
        elif "." not in name:
            for module in (shedding, middleware):
                setattr(module, name, traced(getattr(module, name)))
        else:
            parts = name.split(".")
            for i in range(len(parts) - 1, 0, -1):
                try:
                    owner: Any = importlib.import_module("modelapi." + ".".join(parts[:i]))
                except ImportError:
                    continue
                for attr in parts[i:-1]:
                    owner = getattr(owner, attr)
                setattr(owner, parts[-1], traced(getattr(owner, parts[-1])))
                break


if __name__ == "__main__":
    args = sys.argv[1:]

    def option(name: str, default: str) -> str:
        if name in args:
            i = args.index(name)
            value = args[i + 1]
            del args[i : i + 2]
            return value
        return default

    level = option("--log-level", "info")
    fmt = option("--log-format", "json")
    only = option("--only", "") or None
    per_s = option("--refusals-per-s", "unbounded")
    main(args[0] if args else "head", int(args[1]) if len(args) > 1 else 200, level, fmt, only, per_s)
