"""Replicas behind HAProxy for tests: each replica its own host in a network namespace, wired to a hub.

``network(n)`` builds, as root, a hub namespace holding a bridge (10.213.X.1/24) and ``n`` replica
namespaces, each joined to the bridge by a veth pair and given 10.213.X.(10+i) with a default route via the
hub. Every address lives inside namespaces the test created; nothing is added to the machine's own network.
HAProxy runs in the root namespace and reaches into the hub with its ``namespace`` keyword (Debian's build has
network namespace support): it balances HTTP to the replicas, and relays the machine's PostgreSQL and the
test's Redis (both on 127.0.0.1 in the root namespace) to the hub address, where the replicas reach them.
Where namespaces cannot be created (not root, no ``ip``, a container without CAP_NET_ADMIN; or
``REPLICA_TEST_NETNS=off``) the replicas listen on loopback ports instead, and ``reason`` says why.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from .ports import free_port


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True, timeout=10)


@dataclass
class Network:
    """Where replicas listen and how they reach the shared services."""

    hosts: list[str]  # the replicas' addresses
    ports: list[int]  # their ports
    namespaces: list[str | None]  # each replica's namespace (None: the root namespace, loopback)
    hub: str | None  # the hub namespace, where HAProxy connects and relays
    service_host: str  # the address replicas reach PostgreSQL and Redis at
    reason: str  # why namespaces, or why not

    def prefix(self, i: int) -> list[str]:
        """The command prefix that runs a process as replica ``i``'s host."""
        ns = self.namespaces[i]
        return ["ip", "netns", "exec", ns] if ns else []


@contextlib.contextmanager
def network(n: int) -> Iterator[Network]:
    tag = secrets.token_hex(3)
    hub = f"ma{tag}-hub"
    made: list[str] = []
    try:
        if os.environ.get("REPLICA_TEST_NETNS") == "off":  # to run the fallback where namespaces work
            raise PermissionError("REPLICA_TEST_NETNS=off")
        if os.geteuid() != 0 or shutil.which("ip") is None:
            raise PermissionError("not root, or iproute2's ip is not installed")
        subnet = f"10.213.{secrets.randbelow(250) + 1}"
        _ip("netns", "add", hub)
        made.append(hub)
        _ip("-n", hub, "link", "set", "lo", "up")
        _ip("-n", hub, "link", "add", "br0", "type", "bridge")
        _ip("-n", hub, "addr", "add", f"{subnet}.1/24", "dev", "br0")
        _ip("-n", hub, "link", "set", "br0", "up")
        names = []
        for i in range(n):
            ns = f"ma{tag}-r{i + 1}"
            _ip("netns", "add", ns)
            made.append(ns)
            _ip("link", "add", "eth0", "netns", ns, "type", "veth", "peer", "name", f"r{i + 1}", "netns", hub)
            _ip("-n", hub, "link", "set", f"r{i + 1}", "master", "br0", "up")
            _ip("-n", ns, "link", "set", "lo", "up")
            _ip("-n", ns, "addr", "add", f"{subnet}.{10 + i + 1}/24", "dev", "eth0")
            _ip("-n", ns, "link", "set", "eth0", "up")
            _ip("-n", ns, "route", "add", "default", "via", f"{subnet}.1")
            names.append(ns)
        net = Network(
            [f"{subnet}.{10 + i + 1}" for i in range(n)],
            [8000] * n,
            list(names),
            hub,
            f"{subnet}.1",
            f"{n} network namespaces with veth pairs to a bridge in a hub namespace ({subnet}.0/24)",
        )
    except (PermissionError, subprocess.CalledProcessError, OSError) as exc:
        for ns in reversed(made):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=10)
        made.clear()
        detail = exc.stderr.strip() if isinstance(exc, subprocess.CalledProcessError) else str(exc)
        net = Network(
            ["127.0.0.1"] * n,
            [free_port() for _ in range(n)],
            [None] * n,
            None,
            "127.0.0.1",
            f"loopback ports, since network namespaces are not available here: {detail}",
        )
    try:
        yield net
    finally:
        for ns in reversed(made):  # deleting a namespace deletes its end of each veth pair, and so the pair
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=10)


@dataclass
class Relay:
    """A TCP port on the root namespace's loopback that HAProxy offers to the replicas at ``port``."""

    name: str
    port: int  # where the replicas connect (on Network.service_host)
    target: int  # 127.0.0.1:target in the root namespace


@dataclass
class Balancer:
    url: str
    direct: list[str]  # one frontend per replica, straight to it (the test's view of each host)
    stats_socket: Path
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    def _stat(self, column: int) -> dict[str, str]:
        with socket.socket(socket.AF_UNIX) as s:
            s.connect(str(self.stats_socket))
            s.sendall(b"show stat\n")
            data = b""
            while chunk := s.recv(65536):
                data += chunk
        out = {}
        for line in data.decode().splitlines():
            cells = line.split(",")
            if len(cells) > 17 and cells[0] == "replicas" and cells[1] not in ("FRONTEND", "BACKEND"):
                out[cells[1]] = cells[column]
        return out

    def servers(self) -> dict[str, str]:
        """Each replica's status as HAProxy sees it: UP, DOWN, ... (``show stat`` on the admin socket)."""
        return {name: value.split()[0] for name, value in self._stat(17).items()}

    def sessions(self) -> dict[str, int]:
        """Each replica's total of sessions (requests sent to it; health checks not included): ``stot``."""
        return {name: int(value or 0) for name, value in self._stat(7).items()}


def haproxy_config(net: Network, front_port: int, direct_ports: Sequence[int], relays: Sequence[Relay],
                   stats_socket: Path) -> str:  # fmt: skip
    """The test's haproxy.cfg: docs/deployment.md's recipe, with the namespaces and relays of the test, and a log
    of the requests that ended abnormally (``dontlog-normal``) on HAProxy's stderr (haproxy.log): a failure says
    where it ended (its termination state) and how many times it was retried."""
    ns = f" namespace {net.hub}" if net.hub else ""
    servers = "\n".join(
        f"    server r{i + 1} {host}:{port}{ns} check inter 500 fall 2 rise 2 observe layer4 error-limit 1 "
        "on-error mark-down"
        for i, (host, port) in enumerate(zip(net.hosts, net.ports, strict=True))
    )
    lines = [
        "global",
        f"    stats socket {stats_socket} mode 600 level admin",
        "    maxconn 2000",
        "    log stderr format raw local0 info",
        "defaults",
        "    mode http",
        "    log global",
        "    option httplog",
        "    option dontlog-normal",
        "    timeout connect 2s",
        "    timeout client 120s",
        "    timeout server 120s",
        "    timeout http-keep-alive 2s",  # below modelapi's 5 s keep-alive: the balancer closes idle ones
        "    retries 3",
        "    option redispatch 1",
        "    retry-on conn-failure empty-response response-timeout 503",
        "frontend api",
        f"    bind 127.0.0.1:{front_port}",
        "    http-request disable-l7-retry if { path_end /jobs }",  # a job upload is not retried blindly
        "    default_backend replicas",
        "backend replicas",
        "    balance leastconn",
        "    option httpchk GET /v2/health/ready",
        "    http-check expect status 200",
        servers,
    ]
    for i, port in enumerate(direct_ports):
        lines += [f"listen direct{i + 1}", f"    bind 127.0.0.1:{port}",
                  f"    server r{i + 1} {net.hosts[i]}:{net.ports[i]}{ns}"]  # fmt: skip
    for relay in relays:
        where = f"{net.service_host}:{relay.port}{ns}" if net.hub else f"127.0.0.1:{relay.port}"
        lines += [f"listen {relay.name}", "    mode tcp", "    timeout client 1h", "    timeout server 1h",
                  f"    bind {where}", f"    server {relay.name} 127.0.0.1:{relay.target}"]  # fmt: skip
    return "\n".join(lines) + "\n"


@contextlib.contextmanager
def haproxy(net: Network, relays: Sequence[Relay], directory: Path) -> Iterator[Balancer]:
    front = free_port()
    direct = [free_port() for _ in net.hosts]
    stats = directory / "haproxy.sock"
    config = directory / "haproxy.cfg"
    config.write_text(haproxy_config(net, front, direct, relays, stats))
    check = subprocess.run(["haproxy", "-c", "-f", str(config)], capture_output=True, text=True, timeout=30)
    assert check.returncode == 0, check.stdout + check.stderr
    log = (directory / "haproxy.log").open("wb")
    proc = subprocess.Popen(["haproxy", "-db", "-f", str(config)], stdout=log, stderr=subprocess.STDOUT)
    balancer = Balancer(f"http://127.0.0.1:{front}", [f"http://127.0.0.1:{p}" for p in direct], stats, proc)
    try:
        deadline = time.monotonic() + 10
        while not stats.exists():
            assert proc.poll() is None and time.monotonic() < deadline, (directory / "haproxy.log").read_text()
            time.sleep(0.05)
        yield balancer
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def wait_ready(url: str, timeout: float, proc: subprocess.Popen[bytes] | None = None, log: Path | None = None) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"exited with {proc.returncode}:\n{log.read_text() if log else ''}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url + "/v2/health/ready", timeout=2).status_code == 200:
                return
        if time.monotonic() > deadline:
            raise RuntimeError(f"{url} not ready after {timeout} s:\n{log.read_text() if log else ''}")
        time.sleep(0.1)
