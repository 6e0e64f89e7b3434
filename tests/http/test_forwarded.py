"""uvicorn's proxy step done by modelapi's HTTP protocol (``http/forwarded.py``): the same scheme and client as
uvicorn's ``ProxyHeadersMiddleware`` gives, for every trusted-hosts setting, client and header combination
below; and through the protocol, the server's app runs without that middleware in front of it, on a scope the
step has seen."""

from __future__ import annotations

import asyncio
import itertools
import socket
import sys
from typing import Any

import pytest
import uvicorn
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from helpers.wire import Connection, Wire
from modelapi.http.forwarded import Forwarded
from modelapi.security.slow_clients import protocol_class

TRUSTED = ["127.0.0.1", "127.0.0.1,::1", "*", "10.0.0.0/8, 192.168.1.7", "unix-socket", ""]
CLIENTS: list[tuple[str, int] | None] = [
    ("127.0.0.1", 50000),
    ("::1", 50000),
    ("10.4.5.6", 1234),
    ("192.168.1.7", 80),
    ("8.8.8.8", 443),
    ("unix-socket", 0),
    None,
]
HEADERS: list[list[tuple[bytes, bytes]]] = [
    [],
    [(b"x-forwarded-for", b"1.2.3.4")],
    [(b"x-forwarded-for", b"1.2.3.4:5678")],
    [(b"x-forwarded-for", b"1.2.3.4, 10.0.0.9")],
    [(b"x-forwarded-for", b"1.2.3.4"), (b"x-forwarded-for", b"10.9.9.9, 192.168.1.7")],
    [(b"x-forwarded-for", b"")],
    [(b"x-forwarded-for", b"[2001:db8::1]:443")],
    [(b"x-forwarded-for", b"10.1.1.1, 10.2.2.2")],  # every hop trusted: the first one
    [(b"x-forwarded-proto", b"https")],
    [(b"x-forwarded-proto", b" wss ")],
    [(b"x-forwarded-proto", b"ftp")],
    [(b"x-forwarded-proto", b"http"), (b"x-forwarded-proto", b"https")],  # the last one
    [(b"x-forwarded-proto", b"https"), (b"x-forwarded-for", b"5.6.7.8"), (b"host", b"x")],
]


def scope_for(client: tuple[str, int] | None, headers: list[tuple[bytes, bytes]]) -> dict[str, Any]:
    return {"type": "http", "client": client, "scheme": "http", "headers": list(headers)}


def through_uvicorn(middleware: ProxyHeadersMiddleware, scope: dict[str, Any]) -> dict[str, Any]:
    seen: list[dict[str, Any]] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        seen.append(scope)

    middleware.app = app  # type: ignore[assignment]
    asyncio.run(middleware(scope, None, None))  # type: ignore[arg-type]
    return seen[0]


@pytest.mark.parametrize("trusted", TRUSTED)
def test_the_step_gives_the_scheme_and_client_uvicorns_middleware_gives(trusted: str) -> None:
    for client, headers in itertools.product(CLIENTS, HEADERS):
        middleware = ProxyHeadersMiddleware(None, trusted_hosts=trusted)  # type: ignore[arg-type]
        expected = through_uvicorn(middleware, scope_for(client, headers))
        _, forwarded = Forwarded.unwrap(middleware)  # type: ignore[arg-type]
        assert forwarded is not None
        scope = scope_for(client, headers)
        if forwarded.trusts(client):
            forwarded.apply(scope)
        got, want = (scope["client"], scope["scheme"]), (expected["client"], expected["scheme"])
        assert got == want, (trusted, client, headers)


def test_an_app_uvicorn_did_not_wrap_has_no_step() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        pass

    assert Forwarded.unwrap(app) == (app, None)


def serve(peer: tuple[str, int], request: bytes, **config: Any) -> tuple[dict[str, Any], list[str]]:
    """One request through the protocol, uvicorn's config loaded as the server loads it: the scope the app saw and
    the functions it was called from."""
    seen: list[dict[str, Any]] = []
    stacks: list[list[str]] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        seen.append(scope)
        frame = sys._getframe(1)
        callers = []
        while frame is not None:
            callers.append(frame.f_code.co_qualname)
            frame = frame.f_back
        stacks.append(callers)
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"0")]})
        await send({"type": "http.response.body", "body": b""})

    async def main() -> None:
        cfg = uvicorn.Config(app, log_config=None, lifespan="off", **config)
        cfg.load()
        conn = Connection(app, peer=peer, config=cfg)
        (answer,) = await conn.send(request)
        assert answer.status == 200
        conn.close()

    asyncio.run(main())
    return seen[0], stacks[0]


REQUEST = b"GET /a HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: 10.1.2.3\r\nX-Forwarded-Proto: https\r\n\r\n"


def test_a_trusted_proxys_headers_name_the_client_and_scheme_and_no_middleware_runs_in_front_of_the_app() -> None:
    scope, stack = serve(("127.0.0.1", 50000), REQUEST)
    assert scope["client"] == ("10.1.2.3", 0) and scope["scheme"] == "https"
    assert "RequestResponseCycle.run_asgi" in stack and not any("ProxyHeadersMiddleware" in name for name in stack)


def test_an_untrusted_clients_headers_are_ignored() -> None:
    scope, _ = serve(("8.8.8.8", 50000), REQUEST)
    assert scope["client"] == ("8.8.8.8", 50000) and scope["scheme"] == "http"


def test_the_trusted_hosts_are_uvicorns_option() -> None:
    scope, _ = serve(("8.8.8.8", 50000), REQUEST, forwarded_allow_ips="8.8.8.8")
    assert scope["client"] == ("10.1.2.3", 0) and scope["scheme"] == "https"
    scope, _ = serve(("127.0.0.1", 50000), REQUEST, forwarded_allow_ips="8.8.8.8")
    assert scope["client"] == ("127.0.0.1", 50000)


def test_without_proxy_headers_nothing_is_taken() -> None:
    scope, _ = serve(("127.0.0.1", 50000), REQUEST, proxy_headers=False)
    assert scope["client"] == ("127.0.0.1", 50000) and scope["scheme"] == "http"


def test_each_request_on_a_kept_connection_is_stepped_on_its_own_headers() -> None:
    seen: list[dict[str, Any]] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        seen.append(scope)
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"0")]})
        await send({"type": "http.response.body", "body": b""})

    async def main() -> None:
        conn = Connection(app)
        await conn.send(REQUEST)
        await conn.send(b"GET /b HTTP/1.1\r\nHost: x\r\n\r\n")
        conn.close()

    asyncio.run(main())
    assert [(s["client"], s["scheme"]) for s in seen] == [(("10.1.2.3", 0), "https"), (("127.0.0.1", 50000), "http")]


def test_over_tls_the_scheme_is_https_unless_a_trusted_proxy_says_otherwise() -> None:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        seen.append(scope)
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"0")]})
        await send({"type": "http.response.body", "body": b""})

    seen: list[dict[str, Any]] = []

    async def main() -> None:
        conn = Connection(app, tls=True)
        assert isinstance(conn.wire, Wire)
        await conn.send(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n")
        await conn.send(b"GET /a HTTP/1.1\r\nHost: x\r\nX-Forwarded-Proto: http\r\n\r\n")
        conn.close()

    asyncio.run(main())
    assert [s["scheme"] for s in seen] == ["https", "http"]


def test_a_websocket_upgrade_keeps_uvicorns_step_and_a_plain_request_gets_the_protocols() -> None:
    """The protocol takes the middleware off only for its own requests: a WebSocket upgrade is served by uvicorn's
    WebSocket protocol, on the app as uvicorn loaded it, whose step names the client and scheme a trusted proxy
    gives (a real server on 127.0.0.1, trusted by default)."""
    seen: list[tuple[str, Any, str]] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        seen.append((scope["type"], scope["client"], scope["scheme"]))
        if scope["type"] == "websocket":
            await receive()
            await send({"type": "websocket.accept"})
            await send({"type": "websocket.close"})
            return
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"0")]})
        await send({"type": "http.response.body", "body": b""})

    forwarded = b"X-Forwarded-For: 10.1.2.3\r\nX-Forwarded-Proto: https\r\n"
    upgrade = (
        b"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        b"Sec-WebSocket-Version: 13\r\n"
    )

    async def main() -> None:
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        cfg = uvicorn.Config(app, http=protocol_class(10.0, 65536), lifespan="off", log_config=None)
        server = uvicorn.Server(cfg)
        serving = asyncio.create_task(server.serve(sockets=[sock]))
        try:
            while not server.started:
                await asyncio.sleep(0.01)
            for extra, status in ((b"", b"200"), (upgrade, b"101")):
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n" + forwarded + extra + b"\r\n")
                assert (await asyncio.wait_for(reader.readline(), 5)).split()[1] == status
                writer.close()
            while len(seen) < 2:
                await asyncio.sleep(0.01)
        finally:
            server.should_exit = True
            await serving

    asyncio.run(main())
    assert sorted(seen) == [("http", ("10.1.2.3", 0), "https"), ("websocket", ("10.1.2.3", 0), "wss")]


def test_a_head_refused_by_the_protocol_is_logged_with_the_client_a_trusted_proxy_names(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The protocol's own 431 (a head over the limit) has its access line, with the client the proxy step gives,
    as every other answer's line has (the step is done on the headers read before the refusal)."""

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        raise AssertionError("a refused head runs no app")

    async def main() -> None:
        cfg = uvicorn.Config(app, log_config=None, lifespan="off")
        cfg.load()
        conn = Connection(app, peer=("127.0.0.1", 50000), config=cfg, max_header_bytes=1024)
        head = b"GET /a HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: 10.1.2.3\r\nX-Big: " + b"a" * 2000
        (answer,) = await conn.send(head)
        assert answer.status == 431 and conn.wire.closed
        conn.close()

    with caplog.at_level("INFO", logger="modelapi.access"):
        asyncio.run(main())
    (record,) = [r for r in caplog.records if r.name == "modelapi.access"]
    assert (record.client, record.method, record.path, record.status) == ("10.1.2.3:0", "GET", "/a", 431)  # type: ignore[attr-defined]
