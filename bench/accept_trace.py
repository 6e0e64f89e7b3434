"""How the main port's listener is drained under ``bench.probe_wait``'s flood: accept4 calls per epoll wait.

Runs ``python -m bench.probe_wait`` (its flags pass through) and records the server process's system calls with
``perf record -k mono`` on the kernel's syscall tracepoints (``accept4``, ``epoll_wait``/``epoll_pwait``: which
listener each accept4 was on, what it returned, how many events each wait returned), samples the connections in
SYN-SENT and SYN-RECV (``ss``) every 50 ms, and reads the kernel's listen counters (``nstat``) before and after.
Prints probe_wait's table, then per flood (found as the first 100 ms with over 100 accepts on the main port):
the loop's waits, the accepts on the main port and how many came from one wait, the EAGAINs (an accept that
found the queue empty), and how many of the flood's connections were accepted by when. Needs root (perf).

    python -m bench.accept_trace [--loop auto|asyncio] [--rounds 2] [--seconds 4]
"""

from __future__ import annotations

import argparse
import collections
import os
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

EAGAIN = 11
EVENTS = ("accept4", "epoll_wait", "epoll_pwait")
COUNTERS = ("TcpExtListenOverflows", "TcpExtListenDrops", "TcpExtTCPSynRetrans", "TcpExtSyncookiesSent")


@dataclass
class Wait:
    """One return of the server's epoll wait and the accept4 calls made before the next wait."""

    at: float
    events: int
    accepted: collections.Counter[int] = field(default_factory=collections.Counter)  # by listener fd
    eagain: int = 0


def _waits(data: Path) -> list[Wait]:
    """The main thread's waits (the thread making most of the traced calls: the event loop's)."""
    lines = subprocess.run(
        ["perf", "script", "-i", str(data), "-F", "tid,time,event,trace"], capture_output=True, text=True, check=True
    ).stdout.splitlines()
    rows = [(int(ln.split()[0]), ln) for ln in lines if ln.strip()]
    main = collections.Counter(tid for tid, _ in rows).most_common(1)[0][0]
    waits: list[Wait] = []
    listener = -1
    for tid, ln in rows:
        if tid != main:
            continue
        at, name = float(ln.split()[1].rstrip(":")), ln.split()[2].rstrip(":")
        if name == "syscalls:sys_enter_accept4":
            listener = int(ln.split("fd: ")[1].split(",")[0], 16)
        elif name in ("syscalls:sys_exit_epoll_wait", "syscalls:sys_exit_epoll_pwait"):
            waits.append(Wait(at, int(ln.split()[-1], 16)))
        elif name == "syscalls:sys_exit_accept4" and waits:
            ret = int(ln.split()[-1], 16)
            if ret >= 2**63:
                ret -= 2**64
            if ret >= 0:
                waits[-1].accepted[listener] += 1
            elif ret == -EAGAIN:
                waits[-1].eagain += 1
    return waits


def _nstat() -> dict[str, int]:
    out = subprocess.run(["nstat", "-az", *COUNTERS], capture_output=True, text=True, check=True).stdout
    return {f[0]: int(f[1]) for f in (ln.split() for ln in out.splitlines()) if len(f) > 1 and f[0] in COUNTERS}


def _states(stop: threading.Event, most: dict[str, int]) -> None:
    while not stop.is_set():
        for state in ("syn-sent", "syn-recv"):
            n = len(subprocess.run(["ss", "-Htn", "state", state], capture_output=True, text=True).stdout.splitlines())
            most[state] = max(most.get(state, 0), n)
        stop.wait(0.05)


def report(waits: list[Wait], seconds: float) -> list[str]:
    total: collections.Counter[int] = collections.Counter()
    for w in waits:
        total.update(w.accepted)
    main = total.most_common(1)[0][0]  # the main port's listener: most accepts
    start = waits[0].at
    bins: collections.Counter[int] = collections.Counter()
    for w in waits:
        bins[int((w.at - start) * 10)] += w.accepted[main]
    floods: list[float] = []
    for b in sorted(bins):
        t = start + b / 10
        if bins[b] > 100 and (not floods or t > floods[-1] + seconds + 1):
            floods.append(t)
    lines = []
    for i, begin in enumerate(floods, 1):
        got = [w for w in waits if begin - 0.1 <= w.at <= begin + seconds + 0.5]
        accepted = sum(w.accepted[main] for w in got)
        per_wait = collections.Counter(w.accepted[main] for w in got)
        first = got[0].at
        by = [
            f"{ms:,} ms: {sum(w.accepted[main] for w in got if w.at - first <= ms / 1000):,}"
            for ms in (100, 200, 500, 1000, 2000, 3000, 4000)
        ]
        lines.append(
            f"flood {i}: {len(got):,} epoll waits returned, {sum(w.events for w in got):,} events; main port: "
            f"{accepted:,} accepted, {sum(w.eagain for w in got):,} EAGAIN (all listeners); accepts on the main port "
            f"per wait: {dict(sorted(per_wait.items()))}; accepted by {', '.join(by)}"
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--seconds", type=int, default=4)
    args, rest = parser.parse_known_args(argv)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (*sys.path[:1], os.environ.get("PYTHONPATH")) if p)}
    before = _nstat()
    with tempfile.TemporaryDirectory(prefix="modelapi-accept-trace-") as tmp:
        data = Path(tmp) / "perf.data"
        cmd = [sys.executable, "-m", "bench.probe_wait", "--seconds", str(args.seconds), *rest]
        bench = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env)
        pid = ""
        while bench.poll() is None and not pid:
            time.sleep(0.1)
            got = subprocess.run(["pgrep", "-f", "bench.probe_wait --server"], capture_output=True, text=True)
            pid = got.stdout.split()[0] if got.stdout.split() else ""
        events = ",".join(f"syscalls:sys_{edge}_{name}" for name in EVENTS for edge in ("enter", "exit"))
        perf = subprocess.Popen(
            ["perf", "record", "-q", "-k", "mono", "-e", events, "-p", pid, "-o", str(data)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        stop, most = threading.Event(), dict[str, int]()
        sampler = threading.Thread(target=_states, args=(stop, most))
        sampler.start()
        table, _ = bench.communicate()
        stop.set()
        sampler.join()
        perf.wait(60)  # perf ends with the process it traces
        after = _nstat()
        print(table, end="")
        print("\n".join(report(_waits(data), args.seconds)))
    counters = ", ".join(f"{k} {after.get(k, 0) - before.get(k, 0)}" for k in COUNTERS)
    print(f"kernel: {counters}; at most {most.get('syn-sent', 0)} SYN-SENT, {most.get('syn-recv', 0)} SYN-RECV")
    return bench.returncode


if __name__ == "__main__":
    raise SystemExit(main())
