"""This process's CPU seconds, resident memory and start time, without psutil.

CPU comes from ``time.process_time`` (user plus system, every platform). Resident memory is read from
``/proc/self/statm`` on Linux; elsewhere the peak from ``getrusage`` stands in (documented as such). The
start time is read from ``/proc/self/stat`` once, falling back to the time this module was imported.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass

_IMPORTED = time.time()


@dataclass(frozen=True, slots=True)
class ProcessStats:
    pid: int
    cpu_seconds: float
    resident_bytes: float
    start_time: float


def _page_size() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return 4096


def resident_bytes() -> float:
    try:
        with open("/proc/self/statm", "rb") as f:
            return float(int(f.read().split()[1]) * _page_size())
    except (OSError, IndexError, ValueError):
        pass
    try:
        import resource
    except ImportError:  # Windows
        return 0.0
    peak = float(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
    return peak if sys.platform == "darwin" else peak * 1024  # bytes on macOS, KiB elsewhere


def start_time() -> float:
    """Unix time this process started: boot time plus the start tick in /proc/self/stat."""
    try:
        with open("/proc/self/stat", "rb") as f:
            stat = f.read()
        # the command name (field 2) may hold spaces and parentheses: fields after the last ')' are fixed
        fields = stat[stat.rindex(b")") + 2 :].split()
        ticks = int(fields[19])  # field 22, starttime, counted from field 3
        with open("/proc/stat", "rb") as f:
            btime = next(int(line.split()[1]) for line in f if line.startswith(b"btime "))
        return btime + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration, AttributeError):
        return _IMPORTED


_started: dict[int, float] = {}


def current() -> ProcessStats:
    pid = os.getpid()
    if pid not in _started:  # read once per process (a forked worker reads its own)
        _started.clear()
        _started[pid] = start_time()
    return ProcessStats(pid, time.process_time(), resident_bytes(), _started[pid])
