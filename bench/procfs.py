"""Resident memory and process trees, read from /proc (Linux)."""

from __future__ import annotations

import os
from pathlib import Path


def rss_bytes(pid: int) -> int:
    """VmRSS of a process (``0``: this one), in bytes; 0 when it is gone."""
    path = Path("/proc/self/status" if pid == 0 else f"/proc/{pid}/status")
    try:
        text = path.read_text()
    except OSError:
        return 0
    for line in text.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def smaps(pid: int) -> dict[str, int]:
    """From /proc/PID/smaps_rollup (``0``: this process), in bytes; empty if unknown.

    ``pss``: shared pages split among the processes sharing them; ``uss``: pages this process alone holds
    (what one more such process costs).
    """
    try:
        text = Path(f"/proc/{pid or 'self'}/smaps_rollup").read_text()
    except OSError:
        return {}
    values: dict[str, int] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[1].isdigit():
            values[parts[0].rstrip(":")] = int(parts[1]) * 1024
    return {"pss": values.get("Pss", 0), "uss": values.get("Private_Clean", 0) + values.get("Private_Dirty", 0)}


def cpu_seconds(pids: list[int]) -> float:
    """User plus system CPU time the processes have used so far, in seconds (gone processes count 0)."""
    ticks = 0
    for pid in pids:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()  # fields[0] is the state, the 3rd field of the line
        ticks += int(fields[11]) + int(fields[12])  # utime, stime: the 14th and 15th fields
    return ticks / os.sysconf("SC_CLK_TCK")


def core_busy_seconds(core: int) -> float:
    """CPU time core ``core`` has spent on anything but idling, since boot, from /proc/stat."""
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith(f"cpu{core} "):
            ticks = [int(v) for v in line.split()[1:]]
            idle = ticks[3] + ticks[4]  # idle, iowait
            busy = sum(ticks[:8]) - idle  # user nice system idle iowait irq softirq steal (guest is in user)
            return busy / os.sysconf("SC_CLK_TCK")
    raise ValueError(f"no cpu{core} in /proc/stat")


def children(pid: int) -> list[int]:
    """Direct children of ``pid``."""
    found: list[int] = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        # the command name is in parentheses and may hold spaces: the parent pid is the 2nd field after ")"
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == pid:
            found.append(int(entry))
    return found


def tree(pid: int) -> list[int]:
    """``pid`` and all its descendants."""
    out = [pid]
    for child in children(pid):
        out.extend(tree(child))
    return out


def command(pid: int) -> str:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return ""
    return raw.replace(b"\0", b" ").decode(errors="replace").strip()
