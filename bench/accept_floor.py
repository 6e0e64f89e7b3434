"""``bench.accept_trace``'s question for the HTTP floor (``floor.py`` on plain uvicorn, uvloop and httptools; no
modelapi code): the same flood (wrk, 1,920 connections at once, each posting a 32-row body as soon as the last
was answered, ``POST /predict``), the server's accept4 and epoll waits recorded by perf, its accept queue by ss.
Server on core 0, wrk on core 1; needs root (perf).

    python -m bench.accept_floor [--rounds 2] [--seconds 4]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import tempfile
import threading
import time
from pathlib import Path

from . import servers, workload
from .accept_trace import EVENTS, _waits, report
from .overload import LOAD_CORE, RESULTS, SCRIPT, SERVER_CORE
from .probe_wait import _queue


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--seconds", type=int, default=4)
    args = parser.parse_args(argv)
    os.sched_setaffinity(0, {LOAD_CORE})
    RESULTS.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="modelapi-accept-floor-") as tmp:
        work = workload.build(Path(tmp), (32,))
        body = work.body("rest", 32)
        data = Path(tmp) / "perf.data"
        floor = servers.floor(work.model_path)
        with servers.serve(floor, core=SERVER_CORE, env=dict(os.environ), log_dir=RESULTS) as srv:
            events = ",".join(f"syscalls:sys_{edge}_{name}" for name in EVENTS for edge in ("enter", "exit"))
            perf = subprocess.Popen(
                ["perf", "record", "-q", "-k", "mono", "-e", events, "-p", str(srv.process.pid), "-o", str(data)],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            time.sleep(1)
            for i in range(args.rounds):
                stop, queue = threading.Event(), list[tuple[float, int]]()
                sampler = threading.Thread(target=_queue, args=(srv.port, stop, queue))
                sampler.start()
                time.sleep(0.3)
                cmd = [
                    "wrk", "-t", "1", "-c", "1920", "-d", f"{args.seconds}s", "--timeout", "10s", "-s", str(SCRIPT),
                    srv.url + "/predict", "--", str(body.path), body.content_type, "",
                ]  # fmt: skip
                wrk = subprocess.run(cmd, capture_output=True, text=True, check=True)
                time.sleep(0.5)
                stop.set()
                sampler.join()
                long_queue = [t for t, n in queue if n > 100]
                held = (max(long_queue) - min(long_queue)) * 1000 if long_queue else 0.0
                answers = wrk.stdout.strip().splitlines()[-1]
                print(f"round {i + 1}: accept queue at most {max(n for _, n in queue):,}, over 100 for {held:,.0f} ms")
                print(f"  wrk: {answers}")
                time.sleep(2)
            perf.send_signal(2)
            perf.wait(60)
        print("\n".join(report(_waits(data), args.seconds)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
