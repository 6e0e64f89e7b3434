"""Ports for the servers the tests start: picked free, then bound by the server a moment later.

Between the pick and the bind another socket may take the port. ``bind(("127.0.0.1", 0))`` picks from the
kernel's ephemeral range, the same range every outgoing connection on the machine takes its local port from, so
any client (of this test, or of a test in the other pytest-xdist worker) could take it meanwhile. So a port is
picked below that range, where no connection's local port comes from, and in a slice of it of this worker's own,
so that two workers never pick the same one. Where the range leaves too little room below it, the kernel's pick is
the fallback.
"""

from __future__ import annotations

import os
import random
import socket
from pathlib import Path

#: the lowest port picked: above the well-known and most registered services' ports
LOWEST = 10_000
#: fewer ports than this below the ephemeral range: use the kernel's pick instead
ROOM = 2_000


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32_768  # Linux's default


def _slice() -> range | None:
    """This worker's ports: its share of those between ``LOWEST`` and the ephemeral range."""
    top = _ephemeral_low()
    if top - LOWEST < ROOM:
        return None
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    count = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1") or 1)
    index = int(worker[2:]) if worker.startswith("gw") and worker[2:].isdigit() else 0
    size = (top - LOWEST) // max(count, 1)
    start = LOWEST + (index % max(count, 1)) * size
    return range(start, start + size)


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))  # no SO_REUSEADDR: a port with connections left in TIME_WAIT is passed over
        except OSError:
            return False
        return True


def free_port() -> int:
    """A port nothing on 127.0.0.1 holds now, from this worker's slice below the ephemeral range (a random place
    in it, then the next free one), else the kernel's pick."""
    ports = _slice()
    if ports is not None:
        first = random.randrange(len(ports))
        for i in range(len(ports)):
            port = ports[(first + i) % len(ports)]
            if _bindable(port):
                return port
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
