"""Refusals on the head in the HTTP protocol (http/shedding.py), in process: modelapi's protocol over a transport
that keeps what is written (tests/helpers/wire.py), in front of the server's app as uvicorn loads it.

While the gate refuses and every model would, a POST to an inference route is answered 503 by the protocol
without the server's app being called (``Server.paths`` counts every request the app was handed), and the answer
is the one the app's gate refusal gives: status, headers, body in the route's error style, the event, the
rejections reporter and the access line. The connection stays usable. An early retry whole in one read is held by
the protocol and answered as the app answers the ones it holds. An early retry otherwise, a browser's request with
CORS on, a body over the limit, and every request while tracing is on go to the app instead. Their access lines
are bounded (``access_log_refusals_per_s`` a second); those past the bound are counted by the reporter.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from opentelemetry.sdk.trace import TracerProvider
from uvicorn.protocols.http import httptools_impl

from helpers.clock import Clock
from helpers.keys import create_key
from helpers.repo import EventLog
from helpers.wire import Answer, Connection
from modelapi import tracing
from modelapi.events import RequestRejected
from modelapi.gate import REFUSING_FOR_S, ModelGate
from modelapi.http.app import create_app
from modelapi.http.holds import RetryHolds
from modelapi.http.pacing import Pacing
from modelapi.http.rejections import REPORTER
from modelapi.http.shedding import RefusalLines, Shedding, _writes_id_as_given
from modelapi.protocols import ErrorStyle
from modelapi.protocols.base import PROBLEM
from modelapi.protocols.v2.errors import V2_ERRORS
from modelapi.security.slow_clients import CONNECTION, GONE, LET_THROUGH, GuardedHttpToolsProtocol
from modelapi.settings import Settings
from toymodels import Sleepy

INFER = "/v2/models/sleepy/infer"
#: a row of ``seconds`` 0.0 in each protocol's form
BODIES = {
    "/v2/": orjson.dumps({"inputs": [{"name": "seconds", "datatype": "FP64", "shape": [1], "data": [0.0]}]}),
    "/v1/": orjson.dumps({"instances": [{"seconds": 0.0}]}),
    "/": orjson.dumps({"seconds": 0.0}),
}
FULL = "model 'sleepy' already has 1 requests in flight, the limit (max_inflight); retry shortly"
#: the detail when the answer may not name the model
ANY_MODEL = "every model this server serves is over its in-flight or queue-time limit; retry shortly"
STANDARD = {
    "cache-control": "no-store",
    "x-content-type-options": "nosniff",
    "content-security-policy": "default-src 'none'; frame-ancestors 'none'",
}


def post(path: str = INFER, headers: str = "", body: bytes | None = None, version: str = "1.1") -> bytes:
    if body is None:
        body = next(b for prefix, b in BODIES.items() if path.startswith(prefix))
    head = f"POST {path} HTTP/{version}\r\nhost: test\r\ncontent-type: application/json\r\n"
    return f"{head}content-length: {len(body)}\r\n{headers}\r\n".encode() + body


def get(path: str) -> bytes:
    return f"GET {path} HTTP/1.1\r\nhost: test\r\n\r\n".encode()


def sleepy(name: str = "sleepy") -> Sleepy:
    model = Sleepy()
    model.name = name
    return model


class Server:
    """The server's app behind uvicorn's loading, counting the requests it is handed; ``full`` fills a model's
    in-flight limit (1) as a call in flight would."""

    def __init__(self, app: Any, shedding: Shedding, body_timeout_s: float = 60.0) -> None:
        self.app = app
        self.shedding = shedding
        self.body_timeout_s = body_timeout_s  # the server's, for its protocol as for its middleware
        self.paths: list[str] = []
        self.dataplane = app.state.dataplane
        self.gate: ModelGate = self.dataplane.gate
        self.events = EventLog()
        self.dataplane.events.subscribe(self.events)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            self.paths.append(scope["path"])
        await self.app(scope, receive, send)

    def connect(
        self, port: int = 50000, tls: bool = False, pacing: Pacing | None = None, uvicorn_log: bool = False
    ) -> Connection:
        """``uvicorn_log``: uvicorn's own access line, off as in modelapi's server (pytest's handler would turn it
        on)."""
        conn = Connection(
            self, self.shedding, ("127.0.0.1", port), tls, pacing=pacing, body_timeout_s=self.body_timeout_s
        )
        conn.protocol.access_log = uvicorn_log
        return conn

    async def refusing_connection(self) -> Connection:
        """A new connection once requests are refused on their heads: the model full, the app's refusal given."""
        self.full()
        await self.refusing()
        return self.connect()

    def full(self, *names: str) -> None:
        for name in names or ("sleepy",):
            if not self.gate.inflight.get(name):
                self.gate.enter(name)  # as a call in flight (the limit is 1)

    def room(self, *names: str) -> None:
        for name in names or list(self.gate.inflight):
            while self.gate.inflight.get(name):
                self.gate.leave(name)

    async def refusing(self, conn: Connection | None = None, path: str = INFER) -> Answer:
        """The app's own refusal of a request (the gate is to be full), which makes the protocol refuse the next
        ones on their heads."""
        before = len(self.paths)
        (answer,) = await (conn or self.connect(port=1)).send(post(path))
        assert answer.status == 503 and len(self.paths) == before + 1 and self.gate.refusing
        return answer

    def rejected(self) -> list[RequestRejected]:
        return self.events.of(RequestRejected)


@contextlib.asynccontextmanager
async def serving(*models: Sleepy, **settings: Any) -> AsyncIterator[Server]:
    """An app serving ``models`` (one sleepy model by default), in-flight limit 1, early retries not held
    unless asked, with the protocol's refusals bound."""
    shedding = Shedding()
    options = {"job_workers": 0, "metrics": False, "max_inflight": 1, "hold_early_retries": False, **settings}
    config = Settings(**options)
    app = create_app(list(models) or [sleepy()], config, shedding=shedding)
    async with app.router.lifespan_context(app):
        yield Server(app, shedding, config.body_timeout_s)


def run(test: Any) -> None:
    asyncio.run(test())


def seen(answer: Answer) -> tuple[int, dict[str, str], bytes]:
    """What an answer shows a client, its request id aside (a new one each time)."""
    headers = {k: v for k, v in answer.headers.items() if k != "x-request-id"}
    return answer.status, headers, re.sub(rb"[0-9a-f]{32}", b"<id>", answer.body)


@pytest.fixture
def access(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    REPORTER.flush()  # what earlier tests left counted
    caplog.set_level(logging.INFO, logger="modelapi.access")
    caplog.clear()
    yield caplog


def access_lines(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "modelapi.access"]


@pytest.fixture
def cycles(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Every request cycle uvicorn's protocol makes, from now on."""
    made: list[Any] = []

    class Counted(httptools_impl.RequestResponseCycle):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            made.append(self)

    monkeypatch.setattr(httptools_impl, "RequestResponseCycle", Counted)
    return made


# while the gate admits --------------------------------------------------------------------------------------------
def test_while_the_gate_admits_the_protocol_asks_nothing_more_than_one_flag(monkeypatch: pytest.MonkeyPatch) -> None:
    async def main() -> None:
        async with serving() as server:

            def never() -> None:
                raise AssertionError("the data plane was asked while the gate admits")

            monkeypatch.setattr(server.dataplane, "shed", never)
            conn = server.connect()
            assert [a.status for a in await conn.send(post() + post("/models/sleepy/predict"), 2)] == [200, 200]
            assert server.paths == [INFER, "/models/sleepy/predict"] and not server.gate.refusing

    run(main)


# the answer -------------------------------------------------------------------------------------------------------
def test_after_the_apps_refusal_the_next_request_is_refused_on_its_head_as_the_app_would(
    access: pytest.LogCaptureFixture, cycles: list[Any]
) -> None:
    async def main() -> None:
        async with serving() as server:
            server.full()
            by_app = await server.refusing()
            conn = server.connect()
            (shed,) = await conn.send(post())
            assert server.paths == [INFER]  # the app was not called for the second
            assert len(cycles) == 1 and conn.wire.writes == [conn.wire.writes[0]]  # nor a cycle made: one write
            assert shed.status == 503 and shed.headers["retry-after"] == "1"
            assert shed.json() == {"error": FULL, "request_id": shed.headers["x-request-id"]}  # V2's style
            assert re.fullmatch(r"[0-9a-f]{32}", shed.headers["x-request-id"])
            assert shed.headers["content-type"] == "application/json"
            assert int(shed.headers["content-length"]) == len(shed.body)
            assert STANDARD.items() <= shed.headers.items() and "strict-transport-security" not in shed.headers
            assert seen(shed) == seen(by_app)
            assert server.rejected() == [RequestRejected("sleepy", "v2", "overloaded", 503)] * 2
            assert not conn.wire.closed

    run(main)
    REPORTER.flush()
    warnings = [r for r in access.records if r.name == "modelapi.rejections"]
    assert sum(r.refused for r in warnings) == 2 and all(r.model == "sleepy" for r in warnings)
    lines = access_lines(access)
    assert [(r.status, r.method, r.path, r.client) for r in lines] == [
        (503, "POST", INFER, "127.0.0.1:1"),  # the app's
        (503, "POST", INFER, "127.0.0.1:50000"),  # the protocol's
    ]
    assert lines[1].bytes > 0 and lines[1].request_id != lines[0].request_id


@pytest.mark.parametrize(
    "path",
    [
        INFER,
        "/v2/models/sleepy/versions/1/infer",
        "/models/sleepy/predict",  # records: problem+json
        "/predict",
        "/models/sleepy/versions/1/predict",
        "/v1/models/sleepy:predict",  # V1: problem+json too
        "/v1/models/sleepy/versions/1:predict",
    ],
)
def test_every_inference_route_gets_the_apps_answer_in_its_error_style(path: str) -> None:
    async def main() -> None:
        async with serving() as server:
            server.full()
            headers = "x-request-id: client-id-1\r\n"
            (by_app,) = await server.connect(port=1).send(post(path, headers))
            assert len(server.paths) == 1 and server.gate.refusing
            (shed,) = await server.connect().send(post(path, headers))
            assert len(server.paths) == 1
            assert shed.status == by_app.status == 503
            assert shed.headers == by_app.headers and shed.body == by_app.body  # the client's id in both
            if path.startswith("/v2"):
                assert shed.json() == {"error": FULL, "request_id": "client-id-1"}
            else:
                assert shed.headers["content-type"] == "application/problem+json"
                assert shed.json() == {
                    "type": "about:blank",
                    "title": "Overloaded",
                    "status": 503,
                    "detail": FULL,
                    "instance": path,
                    "request_id": "client-id-1",
                }
            protocol = "v2" if path.startswith("/v2") else "v1" if path.startswith("/v1") else "records"
            assert server.rejected()[-1] == RequestRejected("sleepy", protocol, "overloaded", 503)

    run(main)


def test_a_request_id_the_middleware_would_not_take_is_replaced() -> None:
    async def main() -> None:
        async with serving() as server:
            conn = await server.refusing_connection()
            (kept,) = await conn.send(post(headers="x-request-id: abc-1.2:3\r\n"))
            (replaced,) = await conn.send(post(headers="x-request-id: not one, of ours\r\n"))
            assert len(server.paths) == 1
            assert kept.headers["x-request-id"] == "abc-1.2:3" and kept.json()["request_id"] == "abc-1.2:3"
            assert re.fullmatch(r"[0-9a-f]{32}", replaced.headers["x-request-id"])

    run(main)


def test_over_tls_and_behind_a_trusted_proxy_the_answer_and_the_access_line_are_the_apps(
    access: pytest.LogCaptureFixture,
) -> None:
    """uvicorn's proxy step (X-Forwarded-For and -Proto from a trusted address: 127.0.0.1 by default) runs in front
    of a refusal as in front of the app: HSTS for https, the client's address in the access line."""
    forwarded = "x-forwarded-for: 10.1.2.3\r\nx-forwarded-proto: https\r\nx-request-id: r1\r\n"

    async def main() -> None:
        async with serving() as server:
            server.full()
            by_app = await server.refusing(server.connect(port=1, tls=True))
            (tls,) = await server.connect(tls=True).send(post())
            assert len(server.paths) == 1
            assert tls.headers["strict-transport-security"] == "max-age=31536000"
            assert seen(tls) == seen(by_app)
            server.gate.refusing = False
            (proxied_by_app,) = await server.connect(port=2).send(post(headers=forwarded))
            (proxied,) = await server.connect(port=3).send(post(headers=forwarded))
            assert len(server.paths) == 2
            assert proxied.headers == proxied_by_app.headers and proxied.body == proxied_by_app.body
            assert proxied.headers["strict-transport-security"] == "max-age=31536000"

    run(main)
    clients = [r.client for r in access_lines(access)]
    assert clients == ["127.0.0.1:1", "127.0.0.1:50000", "10.1.2.3:0", "10.1.2.3:0"]


# what is refused on the head, and when ------------------------------------------------------------------------
def test_other_methods_other_paths_and_the_probes_go_to_the_app() -> None:
    async def main() -> None:
        async with serving() as server:
            conn = await server.refusing_connection()
            requests = [
                get("/v2/health/live"),
                get("/v2/health/ready"),
                get(INFER),  # 405
                post("/v2/health/live"),  # 405
                post("/v2/models/sleepy"),  # 405
                post("/models/sleepy/jobs", body=b"{}"),
                get("/models/sleepy/predict?seconds=0"),  # records takes GET: the app refuses it
            ]
            answers = await conn.send(b"".join(requests), len(requests))
            assert [a.status for a in answers] == [200, 200, 405, 405, 405, answers[5].status, 503]
            assert len(server.paths) == 1 + len(requests)

    run(main)


@pytest.mark.parametrize(
    "path",
    [
        "/nope/predict",
        "/x/y/infer",
        "/v2/models/sleepy/extra/infer",
        "/v2/models/a%2Fb/infer",  # the router matches the decoded path: /v2/models/a/b/infer
        "/v1/models/sleepy/x:predict",
        "/v1/models/a:b:predict",
        "/models/sleepy/predict/predict",
    ],
)
def test_a_path_no_route_takes_is_not_refused_on_its_head_but_gets_the_apps_404(path: str) -> None:
    async def main() -> None:
        async with serving() as server:
            server.full()
            await server.refusing()
            (answer,) = await server.connect().send(post(path, body=b"{}"))
            assert answer.status == 404 and len(server.paths) == 2  # the app answered

    run(main)


@pytest.mark.parametrize("models", [1, 2])
def test_any_models_name_is_refused_on_its_head_alike_so_the_answer_tells_no_model_exists(models: int) -> None:
    """Every model refuses: a request for a model that does not exist gets the same answer as one for a model that
    does (its request id aside), absolute-form and percent-encoded paths too."""

    async def main() -> None:
        async with serving(*[sleepy(), sleepy("other")][:models]) as server:
            server.full("sleepy", "other")
            await server.refusing()
            conn = server.connect()
            paths = [
                INFER,
                "/v2/models/no-such-model/infer",
                "/v2/models/no%20such/versions/7/infer",
                "http://test/v2/models/ghost/infer?x=1",
            ]
            answers = [(await conn.send(post(path, body=BODIES["/v2/"])))[0] for path in paths]
            assert len(server.paths) == 1 and all(seen(a) == seen(answers[0]) for a in answers)
            assert answers[0].status == 503 and (models == 1 or answers[0].json()["error"] == ANY_MODEL)

    run(main)


def test_a_model_with_room_again_serves_the_next_request_and_the_flag_clears_a_while_after_the_last_refusal() -> None:
    async def main() -> None:
        async with serving() as server:
            server.full()
            await server.refusing()
            server.room()
            (served,) = await server.connect().send(post())
            # within REFUSING_FOR_S of the refusal, heads are still asked about on their heads
            assert served.status == 200 and len(server.paths) == 2 and server.gate.refusing
            server.gate.refused_at -= REFUSING_FOR_S  # a while later
            (served,) = await server.connect().send(post())
            assert served.status == 200 and len(server.paths) == 3 and not server.gate.refusing

    run(main)


def test_several_models_all_full_get_an_answer_that_names_none_and_one_with_room_goes_to_the_app() -> None:
    async def main() -> None:
        async with serving(sleepy(), sleepy("other")) as server:
            server.full("sleepy", "other")
            await server.refusing()
            conn = server.connect()
            (shed,) = await conn.send(post("/v2/models/other/infer"))
            assert len(server.paths) == 1 and shed.status == 503
            assert shed.json()["error"] == ANY_MODEL
            assert server.rejected()[-1] == RequestRejected(None, "v2", "overloaded", 503)
            server.room("other")
            (served,) = await conn.send(post("/v2/models/other/infer"))
            assert served.status == 200 and len(server.paths) == 2

    run(main)


def test_a_model_that_is_not_ready_does_not_make_another_the_one_to_name() -> None:
    """Two models known, one ready: a request for the other is not told the ready one's limits (nor counted as its
    refusal)."""

    class Broken(Sleepy):
        def __init__(self) -> None:
            self.name = "broken"

        def load(self) -> None:
            raise RuntimeError("does not load")

    async def main() -> None:
        async with serving(sleepy(), Broken()) as server:
            server.full()
            await server.refusing()
            (shed,) = await server.connect().send(post("/v2/models/broken/infer"))
            assert len(server.paths) == 1 and shed.status == 503
            assert shed.json()["error"] == ANY_MODEL
            assert server.rejected()[-1] == RequestRejected(None, "v2", "overloaded", 503)

    run(main)


def test_with_authentication_on_a_request_without_a_key_may_be_refused_but_learns_no_model_name(
    tmp_path: Path,
) -> None:
    """Every model refuses, so the 503 says nothing about which exist; its detail names none, even the only one
    (without a key, the documents name no model either)."""
    key = create_key(tmp_path)

    async def main() -> None:
        async with serving(state_dir=tmp_path, auth="on") as server:
            server.full()
            (by_app,) = await server.connect(port=1).send(post(headers=f"authorization: Bearer {key}\r\n"))
            assert by_app.status == 503 and server.gate.refusing
            (shed,) = await server.connect().send(post())
            assert len(server.paths) == 1
            assert shed.status == 503 and shed.json()["error"] == ANY_MODEL and "sleepy" not in shed.body.decode()
            assert shed.headers["retry-after"] == "1"
            server.room()
            (unauthenticated,) = await server.connect().send(post())
            assert unauthenticated.status == 401

    run(main)


def test_with_cors_on_a_browsers_request_goes_to_the_app_which_adds_the_cors_headers() -> None:
    origin = "origin: https://app.example\r\n"

    async def main() -> None:
        async with serving(cors_origins=["https://app.example"]) as server:
            server.full()
            await server.refusing()
            (browser,) = await server.connect().send(post(headers=origin))
            assert len(server.paths) == 2 and browser.status == 503
            assert browser.headers["access-control-allow-origin"] == "https://app.example"
            assert "retry-after" in browser.headers["access-control-expose-headers"]
            (other,) = await server.connect().send(post())
            assert len(server.paths) == 2 and other.status == 503

    run(main)


def test_a_body_declared_over_the_limit_gets_the_apps_413_and_the_connection_closes() -> None:
    async def main() -> None:
        async with serving(max_body_bytes=1000) as server:
            conn = await server.refusing_connection()
            (too_large,) = await conn.send(post(body=b" " * 1001))
            assert len(server.paths) == 2 and too_large.status == 413 and conn.wire.closed

    run(main)


def test_with_tracing_on_every_request_reaches_the_app_and_its_span() -> None:
    provider = TracerProvider()
    tracing.use(provider)
    try:

        async def main() -> None:
            async with serving() as server:
                server.full()
                await server.refusing()
                (refused,) = await server.connect().send(post())
                assert len(server.paths) == 2 and refused.status == 503 and "traceresponse" in refused.headers

        run(main)
    finally:
        tracing.use(None)
        provider.shutdown()


# the connection ---------------------------------------------------------------------------------------------------
def test_the_connection_stays_usable_the_unread_body_dropped_and_pipelined_answers_in_order() -> None:
    async def main() -> None:
        async with serving() as server:
            conn = await server.refusing_connection()
            request = post()
            split = request.index(b"\r\n\r\n") + 4 + 5
            (late,) = await conn.send(request[:split])  # refused before the rest of its body arrives
            assert late.status == 503
            conn.feed(request[split:])
            large = post(body=b"[" + b" " * 1_000_000 + b"]")
            (refused,) = await conn.send(large[:1000])
            assert refused.status == 503
            for start in range(1000, len(large), 65536):
                conn.feed(large[start : start + 65536])
            pipelined = (
                post() + get("/v2/health/live") + post("/models/sleepy/predict") + post("/v1/models/sleepy:predict")
            )
            answers = await conn.send(pipelined, 4)
            assert [a.status for a in answers] == [503, 200, 503, 503]
            assert answers[1].json() == {"live": True}
            assert answers[2].headers["content-type"] == "application/problem+json"
            assert len(server.paths) == 2  # the probe
            server.room()  # the overload is over: the same connection is served
            (served,) = await conn.send(post())
            assert served.status == 200 and served.json()["outputs"][0]["data"] == [0.0]
            assert not conn.wire.closed and len(server.paths) == 3

    run(main)


def test_a_request_decided_on_its_head_is_decided_again_when_it_runs() -> None:
    """A pipelined request runs only once the answers before it are out, maybe after the overload ended: the
    refusal decided on its head asks again, and hands it to the app if the model has room by then."""

    async def main() -> None:
        async with serving() as server:
            server.full()
            await server.refusing()
            handed: list[str] = []

            async def app(scope: Any, receive: Any, send: Any) -> None:
                handed.append(scope["path"])

            refuse = server.shedding.app_for(b"POST", INFER.encode(), app, time.monotonic())
            assert refuse is not None
            server.room()
            scope = {"type": "http", "method": "POST", "path": INFER, "headers": [], "client": ("127.0.0.1", 1)}
            await refuse(scope, None, None)
            assert handed == [INFER]

    run(main)


@pytest.mark.parametrize(
    ("version", "headers"),
    [("1.1", "connection: close\r\n"), ("1.0", ""), ("1.0", "connection: keep-alive\r\n")],
)
def test_connection_close_and_http_1_0_are_honoured(version: str, headers: str) -> None:
    async def main() -> None:
        async with serving() as server:
            conn = await server.refusing_connection()
            (shed,) = await conn.send(post(headers=headers, version=version))
            assert len(server.paths) == 1 and shed.status == 503
            assert shed.headers["connection"] == "close" and conn.wire.closed

    run(main)


@pytest.mark.parametrize("refused", [False, True], ids=["served", "refused-on-its-head"])
def test_once_the_shutdown_delay_begins_every_answer_closes_its_connection(refused: bool) -> None:
    """``--shutdown-delay``: the server goes on answering, each answer with ``connection: close``, so that a client
    that does not check readiness comes back on a new connection (which a balancer sends elsewhere)."""

    async def main() -> None:
        async with serving() as server:
            conn = await server.refusing_connection() if refused else server.connect()
            (before,) = await conn.send(post())
            assert "connection" not in before.headers and not conn.wire.closed
            type(conn.protocol).close_after_answers()  # (as the server does when its delay begins)
            (answer,) = await conn.send(post())
            assert answer.status == (503 if refused else 200)
            assert answer.headers["connection"] == "close" and conn.wire.closed
            assert len(server.paths) == (1 if refused else 2)  # (refused on its head: never reached the app)

    run(main)


def test_a_request_in_progress_when_the_shutdown_delay_begins_closes_its_connection_after_its_answer() -> None:
    """Read before the class's flag was set: the server tells each connection (``close_after_answer``)."""

    async def main() -> None:
        async with serving() as server:
            conn = server.connect()
            body = orjson.dumps({"seconds": 0.5})
            conn.feed(post("/predict", body=body))
            await asyncio.sleep(0.05)
            assert not conn.wire.writes  # in progress
            type(conn.protocol).close_after_answers()
            conn.protocol.close_after_answer()
            (answer,) = await conn.answers()
            assert answer.status == 200 and answer.headers["connection"] == "close" and conn.wire.closed

    run(main)


def test_only_a_servers_own_protocol_class_is_told_to_close_after_answers() -> None:
    with pytest.raises(TypeError):
        GuardedHttpToolsProtocol.close_after_answers()  # (it would reach every server of the process)
    assert not GuardedHttpToolsProtocol.closing


def test_a_refused_request_that_waits_for_100_continue_gets_its_answer_and_the_connection_closes() -> None:
    """Its client sends the body only after ``100 Continue``: kept open, the connection's next bytes could be
    the body or the next request; closed, neither side has to guess (RFC 9110 10.1.1)."""

    async def main() -> None:
        async with serving() as server:
            conn = await server.refusing_connection()
            head, _ = post().split(b"\r\n\r\n", 1)
            (shed,) = await conn.send(head + b"\r\nexpect: 100-continue\r\n\r\n")
            assert shed.status == 503 and shed.headers["connection"] == "close" and conn.wire.closed

    run(main)


def test_a_refused_request_that_waits_for_100_continue_pipelined_behind_an_answer_closes_the_connection_too() -> None:
    """Behind an answer still to come, a request cycle runs the refusal: it closes the connection as the refusal
    written on the head does (its body, which may never come, is not taken for the next request)."""

    async def main() -> None:
        async with serving() as server:
            conn = await server.refusing_connection()
            head, _ = post().split(b"\r\n\r\n", 1)
            probe, shed = await conn.send(get("/v2/health/live") + head + b"\r\nexpect: 100-continue\r\n\r\n", 2)
            assert probe.status == 200 and "connection" not in probe.headers
            assert shed.status == 503 and shed.headers["connection"] == "close" and conn.wire.closed

    run(main)


# the refused request's body: its deadline -------------------------------------------------------------------------
def head_of(framing: str, length: int = 10_000) -> bytes:
    """A POST's head to the V2 route, its body of ``length`` bytes declared by ``content-length``, or chunked."""
    declared = "transfer-encoding: chunked" if framing == "chunked" else f"content-length: {length}"
    return f"POST {INFER} HTTP/1.1\r\nhost: test\r\ncontent-type: application/json\r\n{declared}\r\n\r\n".encode()


def piece_of(framing: str) -> bytes:
    """A byte of the body, framed (a chunk of its own when chunked)."""
    return b"1\r\n \r\n" if framing == "chunked" else b" "


async def refused_body_connection(server: Server, path: str, head: bytes) -> Connection:
    """A new connection with ``head`` refused on it: written by the protocol as it reads it (``direct``), or as it
    takes it when its turn comes (``paced``: every head waits its turn), or by a request cycle behind the answer
    to a probe sent first in the same read (``cycle``)."""
    if path == "paced":
        server.full()
        await server.refusing()
        pacing = Pacing(slice_s=0.0)
        conn = server.connect(pacing=pacing)
        conn.feed(head)
        assert [c for c, _ in pacing.waiting] == [conn.protocol]
        (shed,) = await conn.answers()
        assert conn.protocol.cycle is None  # no cycle ran it
    elif path == "direct":
        conn = await server.refusing_connection()
        (shed,) = await conn.send(head)
        assert conn.protocol.cycle is None
    else:
        conn = await server.refusing_connection()
        probe, shed = await conn.send(get("/v2/health/live") + head, 2)
        assert probe.status == 200 and conn.protocol.cycle.scope["path"] == INFER  # its cycle ran it
    assert shed.status == 503 and "connection" not in shed.headers and not conn.wire.closed
    return conn


@pytest.mark.parametrize("client", ["trickles", "stalls"])
@pytest.mark.parametrize("framing", ["content-length", "chunked"])
@pytest.mark.parametrize("path", ["direct", "paced", "cycle"])
def test_a_refused_requests_body_has_the_body_timeout_from_the_refusal_then_the_connection_closes(
    path: str, framing: str, client: str
) -> None:
    """The body of a refused request is dropped as it comes, and it has ``body_timeout_s`` from the refusal to come,
    as an accepted request's body has: then the connection closes, with nothing more written (its 503 is out). A
    client that sends the body a byte at a time, or a byte of it and no more, holds the connection no longer."""

    async def main() -> None:
        async with serving(body_timeout_s=0.3) as server:
            conn = await refused_body_connection(server, path, head_of(framing))
            refused_at = time.monotonic()
            writes = len(conn.wire.writes)
            piece = piece_of(framing)
            conn.feed(piece)  # in a read of its own, after the refusal
            while not conn.wire.closed and time.monotonic() - refused_at < 3.0:
                await asyncio.sleep(0.05)
                if client == "trickles":
                    conn.feed(piece)
            took = time.monotonic() - refused_at
            assert conn.wire.closed and 0.25 < took < 2.0, took
            assert len(conn.wire.writes) == writes
            conn.close()

    run(main)


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
@pytest.mark.parametrize("path", ["direct", "paced", "cycle"])
def test_a_refused_body_that_comes_in_time_leaves_the_connection_kept_and_idle_under_keep_alive(
    path: str, framing: str
) -> None:
    """A body that comes whole within its deadline ends the deadline: the connection is kept past it, idle under
    the keep-alive timer, and serves the next requests."""

    async def main() -> None:
        async with serving(body_timeout_s=0.3) as server:
            conn = await refused_body_connection(server, path, head_of(framing, 5))
            protocol = conn.protocol
            piece = piece_of(framing)
            for _ in range(4):
                conn.feed(piece)
                await asyncio.sleep(0.04)
            conn.feed(piece + (b"0\r\n\r\n" if framing == "chunked" else b""))  # the body's end
            assert protocol.timeout_keep_alive_task is not None  # idle now: kept under keep-alive
            await asyncio.sleep(0.4)  # past the deadline the body had
            assert not conn.wire.closed and protocol.timeout_keep_alive_task is not None
            (again,) = await conn.send(post())
            assert again.status == 503
            server.room()
            (served,) = await conn.send(post())
            assert served.status == 200 and not conn.wire.closed
            conn.close()

    run(main)


# early retries ----------------------------------------------------------------------------------------------------
def test_an_early_retry_whole_in_one_read_is_held_by_the_protocol_and_answered_retry_now_never_run() -> None:
    """A refusal on the head is remembered for the connection; its early retry, whole in one read, is held by the
    protocol itself (no parser, no task: ``Shedding.refuse_read``) until its ``Retry-After``, then answered 503
    "retry now" and never run, counted as the app counts its held retries; a request to another path is none."""

    async def main() -> None:
        async with serving(hold_early_retries=True) as server:
            server.full()
            await server.refusing()
            holds = server.shedding._holds
            assert holds is not None
            conn = server.connect()
            (shed,) = await conn.send(post())
            assert len(server.paths) == 1 and shed.headers["retry-after"] == "1"
            connection, path = list(holds.until)[-1]  # remembered for this connection (the protocol's name for it)
            assert path == INFER and isinstance(connection, int)
            until = holds.until[(connection, INFER)]
            assert 0.9 < until - time.monotonic() <= 1.0
            holds.until[(connection, INFER)] = time.monotonic() + 0.1  # a shorter wait, to keep this fast
            started = time.monotonic()
            conn.feed(post(headers="x-request-id: retry-1\r\n"))
            await asyncio.sleep(0.02)
            assert len(holds.held) == 1 and len(holds.on_head) == 1 and not conn.wire.writes[1:]
            (retry,) = await conn.answers()
            assert len(server.paths) == 1 and retry.status == 503  # held on the head, then refused: never run
            assert retry.headers["retry-after"] == "0" and retry.headers["x-request-id"] == "retry-1"
            assert (connection, INFER) not in holds.until and not holds.held and not holds.on_head
            assert time.monotonic() - started >= 0.09
            assert orjson.loads(retry.body)["error"].startswith("sent before the Retry-After")
            assert [e.reason for e in server.rejected()][-2:] == ["overloaded", "early_retry"]
            (elsewhere,) = await conn.send(post("/models/sleepy/predict"))  # another path: not a retry
            assert len(server.paths) == 1 and elsewhere.status == 503 and elsewhere.headers["retry-after"] != "0"

    run(main)


async def told_to_wait(server: Server, seconds: float, *conns: Connection) -> RetryHolds:
    """Each of ``conns`` refused on its head once (the gate refusing already), and its refusal's wait cut to
    ``seconds``: the next request each sends to the path is an early retry, held that long. The server's holds."""
    holds = server.shedding._holds
    assert holds is not None
    for conn in conns:
        (refused,) = await conn.send(post())
        assert refused.status == 503 and refused.headers["retry-after"] != "0"
    for key in holds.until:
        holds.until[key] = time.monotonic() + seconds
    return holds


def held_seconds(raw: bytes) -> bytes:
    """An answer's bytes, how long it was held aside."""
    return re.sub(rb"held [0-9.]+ s", b"held <s> s", raw)


@pytest.mark.parametrize("tls", [False, True])
def test_an_early_retry_held_by_the_protocol_gets_the_bytes_the_app_gives_one_it_holds(tls: bool) -> None:
    """Split over two reads an early retry goes through the parser to the app, which holds it (``http/holds.py``);
    whole in one read the protocol holds it. The two answers are the same bytes but for their order of headers,
    uvicorn's default headers included."""

    async def main() -> None:
        async with serving(hold_early_retries=True) as server:
            server.full()
            await server.refusing()
            whole, split = server.connect(port=1, tls=tls), server.connect(port=2, tls=tls)
            request = post(headers="x-request-id: same-id\r\n")
            for conn in (whole, split):
                conn.protocol.server_state.default_headers = [(b"server", b"modelapi-test")]
            await told_to_wait(server, 0.1, whole, split)
            whole.feed(request)
            split.feed(request[:40])
            split.feed(request[40:])
            (by_protocol,), (by_app,) = await whole.answers(), await split.answers()
            assert len(server.paths) == 2  # the app's refusal, and the split retry it held
            assert seen(by_protocol)[0] == seen(by_app)[0] == 503
            assert seen(by_protocol)[1] == seen(by_app)[1]
            assert held_seconds(by_protocol.body) == held_seconds(by_app.body)
            assert [e.reason for e in server.rejected()][-2:] == ["early_retry", "early_retry"]

    run(main)


def test_an_early_retry_whose_access_line_is_to_be_written_goes_to_the_app(access: pytest.LogCaptureFixture) -> None:
    async def main() -> None:
        async with serving(hold_early_retries=True) as server:
            conn = await server.refusing_connection()
            await told_to_wait(server, 0.1, conn)
            (retry,) = await conn.send(post())
            assert retry.headers["retry-after"] == "0" and len(server.paths) == 2  # the app held it
            assert [r.status for r in access_lines(access)][-1] == 503  # type: ignore[attr-defined]

    run(main)


def test_a_client_that_leaves_while_its_retry_is_held_on_the_head_gets_nothing_and_nothing_is_counted() -> None:
    async def main() -> None:
        async with serving(hold_early_retries=True) as server:
            conn = await server.refusing_connection()
            holds = await told_to_wait(server, 0.1, conn)
            written = len(conn.wire.writes)
            conn.feed(post())
            await asyncio.sleep(0.02)
            assert holds.on_head
            rejected = len(server.rejected())
            conn.close()
            await asyncio.sleep(0.15)
            assert len(conn.wire.writes) == written and len(server.rejected()) == rejected
            assert not holds.held and not holds.on_head

    run(main)


def test_what_a_client_sends_while_its_retry_is_held_on_the_head_is_read_after_its_answer() -> None:
    async def main() -> None:
        async with serving(hold_early_retries=True) as server:
            conn = await server.refusing_connection()
            await told_to_wait(server, 0.1, conn)
            conn.feed(post())
            await asyncio.sleep(0.02)
            conn.feed(post("/models/sleepy/predict"))  # pipelined behind the held one
            await asyncio.sleep(0.02)
            assert len(conn.wire.writes) == 1  # nothing answered before the held retry
            retry, after = await conn.answers(2)
            assert retry.headers["retry-after"] == "0" and after.status == 503 and after.headers["retry-after"] != "0"
            assert len(server.paths) == 1 and not conn.wire.closed

    run(main)


@pytest.mark.parametrize("stopping", [True, False], ids=["stopping", "shutdown-delay"])
def test_the_server_ending_answers_a_retry_held_on_the_head_and_closes_its_connection(stopping: bool) -> None:
    """Stopping: answered at once (its hold cut short). Once the shutdown delay begins: answered when its hold ends,
    with ``connection: close``, as every answer then."""

    async def main() -> None:
        async with serving(hold_early_retries=True) as server:
            conn = await server.refusing_connection()
            holds = await told_to_wait(server, 30.0 if stopping else 0.1, conn)
            conn.feed(post())
            await asyncio.sleep(0.02)
            assert holds.on_head
            if stopping:
                conn.protocol.shutdown()
            else:
                type(conn.protocol).close_after_answers()
            (retry,) = await conn.answers(timeout=0.5)
            assert retry.headers["retry-after"] == "0" and retry.headers["connection"] == "close"
            assert conn.wire.closed and not holds.held and not holds.on_head

    run(main)


def test_keep_alive_does_not_close_a_connection_whose_retry_is_held_on_the_head() -> None:
    async def main() -> None:
        async with serving(hold_early_retries=True) as server:
            conn = await server.refusing_connection()
            conn.protocol.timeout_keep_alive = 0.05
            await told_to_wait(server, 0.2, conn)
            conn.feed(post())
            await asyncio.sleep(0.15)
            assert not conn.wire.closed  # past the keep-alive time, but waiting for its answer
            (retry,) = await conn.answers()
            assert retry.headers["retry-after"] == "0" and not conn.wire.closed
            await asyncio.sleep(0.2)
            assert conn.wire.closed  # idle after its answer: closed the keep-alive time after it

    run(main)


def test_pacing_asking_a_held_connection_for_its_reads_leaves_them_to_wait_for_the_held_answer() -> None:
    """Pacing's queue (or the head's timer) may ask a connection for its waiting reads while a retry is held on it:
    they still wait, and come after the held retry's answer."""

    async def main() -> None:
        async with serving(hold_early_retries=True) as server:
            conn = await server.refusing_connection()
            holds = await told_to_wait(server, 0.1, conn)
            conn.feed(post())
            await asyncio.sleep(0.01)
            conn.feed(post("/models/sleepy/predict"))
            conn.protocol.take_waiting()  # as pacing's queue would, out of turn
            await asyncio.sleep(0.01)
            assert len(conn.wire.writes) == 1 and holds.on_head
            retry, after = await conn.answers(2)
            assert retry.headers["retry-after"] == "0" and after.headers["retry-after"] != "0"

    run(main)


def test_under_a_root_path_a_retry_held_on_the_head_gets_the_style_the_apps_held_answer_has() -> None:
    async def main() -> None:
        async with serving(hold_early_retries=True) as server:
            server.full()
            await server.refusing()
            whole, split = server.connect(port=1), server.connect(port=2)
            for conn in (whole, split):
                conn.protocol.root_path = "/api"
            await told_to_wait(server, 0.1, whole, split)
            request = post(headers="x-request-id: same-id\r\n")
            whole.feed(request)
            split.feed(request[:40])
            split.feed(request[40:])
            (by_protocol,), (by_app,) = await whole.answers(), await split.answers()
            assert by_protocol.headers["content-type"] == by_app.headers["content-type"]
            assert held_seconds(by_protocol.body) == held_seconds(by_app.body)

    run(main)


def test_an_early_retry_that_finds_room_is_not_held_but_run() -> None:
    async def main() -> None:
        async with serving(hold_early_retries=True) as server:
            conn = await server.refusing_connection()
            holds = await told_to_wait(server, 30.0, conn)
            server.room()  # the gate still refusing a while, but the model has room
            heads = asked_on_heads(server.shedding)
            (retry,) = await conn.send(post(), timeout=1.0)
            assert retry.status == 200 and len(server.paths) == 2 and not holds.held  # run by the app as any
            assert heads == [INFER.encode()]  # not held, it was not judged on its read: it is on its head

    run(main)


def test_a_whole_request_let_through_while_the_gate_refuses_is_judged_once_and_served() -> None:
    """The gate still refusing a while, the model with room: ``refuse_read`` judges a request whole in one read,
    finds room and lets it through (``LET_THROUGH``); the app serves it, and its head is not judged again."""

    async def main() -> None:
        async with serving(access_log_refusals_per_s=0) as server:
            conn = await server.refusing_connection()
            server.room()
            dataplane = server.dataplane
            assert server.shedding.refuse_read(post(), time.monotonic(), 1, False, "", 65536) is LET_THROUGH
            asked: list[float] = []
            shed = dataplane.shed

            def counted(waited_s: float = 0.0) -> Any:
                asked.append(waited_s)
                return shed(waited_s)

            dataplane.shed = counted  # type: ignore[method-assign]
            heads = asked_on_heads(server.shedding)
            (answer,) = await conn.send(post(), timeout=1.0)
            assert answer.status == 200 and len(asked) == 1 and dataplane.gate.refusing
            assert heads == []  # judged on its read, by the protocol, not on its head

    run(main)


def test_a_new_connection_from_a_refused_ones_address_and_port_is_not_taken_for_its_retry() -> None:
    """The kernel reuses ephemeral ports: a request on a new connection from the address and port a refusal went
    to is refused on its head as any, not handed to the app as that connection's early retry (which it would hold
    until the Retry-After)."""

    async def main() -> None:
        async with serving(hold_early_retries=True) as server:
            server.full()
            await server.refusing()
            (shed,) = await server.connect().send(post())
            assert shed.status == 503 and len(server.paths) == 1
            (again,) = await server.connect().send(post())  # the same address and port (127.0.0.1:50000)
            assert again.status == 503 and len(server.paths) == 1  # refused on its head: the app never saw it

    run(main)


def test_an_early_retry_held_books_no_place_in_the_schedule_of_returns() -> None:
    """Each refusal books one place in the schedule (20 a second with nothing served, so the 21st is the first told
    2 s): the app's refusal, nine on the head, their nine early retries held and refused with "retry
    now" (no place: they were never judged), the nine requests after them refused on the head and one more on the
    head are 20; an early retry held must not book a place of its own as well."""

    async def main() -> None:
        async with serving(hold_early_retries=True) as server:
            server.gate.clock = lambda: 100.0  # the schedule's clock stands still
            server.full()
            await server.refusing()  # the first place
            holds = server.shedding._holds
            assert holds is not None
            holds.clock = lambda: 50.0  # and the holds' too
            conns = [server.connect(port=100 + i) for i in range(9)]
            waits = [(await conn.send(post()))[0].headers["retry-after"] for conn in conns]
            for key in holds.until:
                holds.until[key] = 50.06  # held 60 ms (just over EARLY_S), to keep this fast
            held = [(await conn.send(post()))[0].headers["retry-after"] for conn in conns]
            assert held == ["0"] * 9 and len(server.paths) == 1  # the retries held on their heads, never run
            waits += [(await conn.send(post()))[0].headers["retry-after"] for conn in conns]  # on the head
            waits += [(await server.connect().send(post()))[0].headers["retry-after"]]
            assert waits == ["1"] * 19 and len(server.paths) == 1
            (twenty_first,) = await server.connect(port=2).send(post())
            assert twenty_first.headers["retry-after"] == "2"

    run(main)


@pytest.mark.parametrize("leave", [True, False])
def test_a_refused_connection_keeps_its_place_in_the_schedule_until_it_closes(leave: bool) -> None:
    """100 connections refused (the app's refusal, then 99 on their heads) are told to come back over 5 s (20 a
    second, nothing served). Once they have closed and the refusals' window has passed, a new connection's refusal
    is told 1 s; while they stay open, it is told to come back after the 40 places still kept."""

    async def main() -> None:
        async with serving() as server:
            clock = Clock(100.0)
            server.gate.clock = clock
            server.full()
            first = server.connect(port=1)
            waits = [(await server.refusing(first)).headers["retry-after"]]
            assert len(server.gate.places) == 1  # the app's refusal keeps the connection's place too
            conns = [server.connect(port=100 + i) for i in range(99)]
            waits += [(await conn.send(post()))[0].headers["retry-after"] for conn in conns]
            assert waits == [str(s) for s in range(1, 6) for _ in range(20)] and len(server.paths) == 1
            if leave:
                for conn in [first, *conns]:
                    conn.close()
            clock.now += 1.5
            await server.connect(port=2).send(post())
            clock.now += 1.5
            (answer,) = await server.connect(port=3).send(post())
            assert answer.headers["retry-after"] == ("1" if leave else "3")

    run(main)


def test_a_refusal_given_after_its_connection_closed_keeps_no_place() -> None:
    """A request refused as it runs (a pipelined one, decided again) whose client has already gone: its
    connection's close was reported before, so no place is kept for it."""

    async def main() -> None:
        async with serving() as server:
            server.full()
            await server.refusing()
            server.gate.places.clear()
            for gone, client in ((True, 7), (False, 8)):
                refusal = server.shedding.app_for(b"POST", INFER.encode(), server, time.monotonic())
                assert refusal is not None
                scope = {"type": "http", "path": INFER, "headers": [], "client": ("127.0.0.1", client)}
                scope[CONNECTION] = client
                scope[GONE] = lambda gone=gone: gone
                answer = refusal.answer(scope)
                assert answer is not None and answer[0] == 503
            assert list(server.gate.places) == [8]

    run(main)


def test_without_holds_nothing_is_remembered_and_a_retry_is_refused_on_its_head() -> None:
    async def main() -> None:
        async with serving() as server:
            server.full()
            await server.refusing()
            assert server.shedding._holds is None
            conn = server.connect()
            assert [a.status for a in await conn.send(post() + post(), 2)] == [503, 503]
            assert len(server.paths) == 1

    run(main)


def test_the_rejections_reporter_counts_a_refusal_on_the_head_under_the_model_the_apps_would(
    access: pytest.LogCaptureFixture,
) -> None:
    """The app's reporter names the model the path names, none for ``/predict``: a refusal on the head is counted
    the same way, so a flood is one warning a second, not one for each path a refusal took."""

    async def main() -> None:
        async with serving() as server:
            server.full()
            for path in ("/predict", "/models/sleepy/predict"):
                server.gate.refusing = False
                await server.refusing(path=path)
                REPORTER.flush()
                (shed,) = await server.connect().send(post(path))
                assert shed.status == 503 and len(server.paths) == 1 + (path != "/predict")
                REPORTER.flush()

    run(main)
    warnings = [(r.model, r.refused) for r in access.records if r.name == "modelapi.rejections"]
    assert warnings == [(None, 1), (None, 1), ("sleepy", 1), ("sleepy", 1)]


# answered on the head without a request cycle ---------------------------------------------------------------------
@pytest.mark.parametrize(
    "headers",
    [
        "",
        "tls",
        "x-forwarded-for: 10.1.2.3\r\nx-forwarded-proto: https\r\n",  # from a trusted proxy: HSTS
        "connection: close\r\n",
    ],
)
def test_a_refusal_on_the_head_is_one_write_without_a_cycle_and_the_bytes_a_cycle_writes(
    headers: str, cycles: list[Any]
) -> None:
    """With no answer before it still to come, the protocol writes the refusal itself; behind one (a probe sent
    first in the same read), uvicorn's cycle runs the same refusal: the bytes are the same, uvicorn's default
    headers and ``connection: close`` included."""
    tls = headers == "tls"
    headers = "x-request-id: same-id\r\n" + ("" if tls else headers)

    async def main() -> None:
        async with serving() as server:
            server.full()
            await server.refusing()
            direct, piped = server.connect(port=1, tls=tls), server.connect(port=2, tls=tls)
            for conn in (direct, piped):
                conn.protocol.server_state.default_headers = [(b"server", b"modelapi-test")]
            made = len(cycles)
            (answer,) = await direct.send(post(headers=headers))
            assert len(cycles) == made and len(direct.wire.writes) == 1 and not direct.protocol.tasks
            await piped.send(get("/v2/health/live") + post(headers=headers), 2)
            assert len(cycles) == made + 2 and len(piped.wire.writes) == 2
            assert direct.wire.writes[0] == piped.wire.writes[1]
            assert answer.status == 503 and answer.headers["server"] == "modelapi-test"
            assert ("strict-transport-security" in answer.headers) == ("https" in headers or tls)
            assert direct.wire.closed == ("close" in headers) == ("connection" in answer.headers)
            assert len(server.paths) == 2  # the app's first refusal, the probe

    run(main)


@pytest.fixture
def parsed(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many requests the protocol's parser has begun, from now on."""
    begun: list[int] = []
    original = GuardedHttpToolsProtocol.on_message_begin

    def on_message_begin(self: GuardedHttpToolsProtocol) -> None:
        begun.append(1)
        original(self)

    monkeypatch.setattr(GuardedHttpToolsProtocol, "on_message_begin", on_message_begin)
    return begun


def same_wait(raw: bytes) -> bytes:
    """An answer's bytes, its ``Retry-After`` aside (each refusal books its own place)."""
    return re.sub(rb"retry-after: [0-9]+", b"retry-after: <s>", raw)


@pytest.mark.parametrize("tls", [False, True])
def test_a_request_whole_in_one_read_is_refused_without_the_parser_in_the_bytes_the_parser_path_writes(
    tls: bool, parsed: list[int]
) -> None:
    """Under a flood most refused requests come whole in one read: those are refused without the parser's
    callbacks (``Shedding.refuse_read``); split over two reads, the same request goes through the parser. The
    answers are the same bytes, uvicorn's default headers included, and both are counted and remembered alike."""

    async def main() -> None:
        async with serving(hold_early_retries=True) as server:
            server.full()
            await server.refusing()
            whole, split = server.connect(port=1, tls=tls), server.connect(port=2, tls=tls)
            for conn in (whole, split):
                conn.protocol.server_state.default_headers = [(b"server", b"modelapi-test")]
            request = post(headers="x-request-id: same-id\r\n")
            holds = server.shedding._holds
            assert holds is not None
            remembered = len(holds.until)
            before = len(parsed)
            (answer,) = await whole.send(request)
            assert len(parsed) == before and answer.status == 503 and not whole.wire.closed
            split.feed(request[:40])
            await split.send(request[40:])
            assert len(parsed) == before + 1
            assert same_wait(whole.wire.writes[0]) == same_wait(b"".join(split.wire.writes))
            assert ("strict-transport-security" in answer.headers) == tls
            # both counted as any refusal on the head, both remembered for their early retries
            assert [e.reason for e in server.rejected()][-2:] == ["overloaded", "overloaded"]
            assert len(holds.until) == remembered + 2
            assert whole.protocol.server_state.total_requests == 1

    run(main)


@pytest.mark.parametrize(
    ("read", "statuses"),
    [
        pytest.param(post() + post(), [503, 503], id="two-requests-in-one-read"),
        pytest.param(post() + b"POST /v2", [503], id="a-request-and-the-start-of-the-next"),
        pytest.param(post()[:-3], [503], id="a-body-still-to-come"),
        pytest.param(post(headers="connection: keep-alive\r\n"), [503], id="connection-named"),
        pytest.param(post(version="1.0"), [503], id="http-1.0"),
        pytest.param(post(INFER + "?x=1"), [503], id="a-query-string"),
        pytest.param(post(headers="x-forwarded-proto: https\r\n"), [503], id="a-trusted-proxys-scheme"),
        pytest.param(post().replace(b"host: test", b"host: test\r\nx-note: caf\xe9"), [503], id="obs-text"),
        pytest.param(post(headers="proxy-connection: close\r\n"), [503], id="proxy-connection"),
        pytest.param(post(headers=f"x-pad: {'a' * 300}\r\n"), [431], id="a-head-over-the-limit"),
        pytest.param(post(headers="x-note : 1\r\n"), [400], id="a-space-before-the-colon"),
        pytest.param(post(headers="x-note: 1\r\n folded\r\n"), [400], id="a-folded-line"),
        pytest.param(
            f"POST {INFER} HTTP/1.1\r\nhost: test\r\ntransfer-encoding: chunked\r\n\r\n2\r\n{{}}\r\n0\r\n\r\n".encode(),
            [503],
            id="chunked",
        ),
        pytest.param(
            post().replace(b"content-length: ", b"content-length: 1\r\ncontent-length: "), [400], id="two-lengths"
        ),
    ],
)
def test_a_read_the_parser_must_frame_is_left_to_it(read: bytes, statuses: list[int], parsed: list[int]) -> None:
    """Only a read that is one whole request, framed plainly, is refused without the parser: anything else (more
    than one request, a body still to come, a field that frames or answers it otherwise, a head the parser would
    refuse) is the parser's, and is answered as before."""

    async def main() -> None:
        async with serving() as server:
            server.full()
            await server.refusing()
            conn, split = (Connection(server, server.shedding, max_header_bytes=300) for _ in range(2))
            conn.protocol.access_log = split.protocol.access_log = False
            before, ran = len(parsed), len(server.paths)
            answers = await conn.send(read, len(statuses))
            assert [a.status for a in answers] == statuses
            assert len(parsed) > before
            assert len(server.paths) == ran  # answered on the head (or by the parser): the app never ran
            # as the same bytes in two reads: the connection kept or closed alike
            split.feed(read[:20])
            await split.send(read[20:], len(statuses))
            assert conn.wire.closed == split.wire.closed
            # the same read again, its head now seen (``Shedding._heads``): the parser's again
            again = Connection(server, server.shedding, max_header_bytes=300)
            again.protocol.access_log = False
            before = len(parsed)
            assert [a.status for a in await again.send(read, len(statuses))] == statuses
            assert len(parsed) > before

    run(main)


def test_a_head_seen_before_is_refused_alike_with_a_new_request_id_each_time(parsed: list[int]) -> None:
    """A head that comes again (a client sending the same request again and again, as under a flood) is read from
    what was kept of it: refused without the parser as the first time, each answer with a request id of its own
    unless the client gave one. Past the heads kept (256), the kept ones are forgotten and read again."""

    async def main() -> None:
        async with serving() as server:
            conn = await server.refusing_connection()
            before = len(parsed)
            answers = [(await conn.send(post()))[0] for _ in range(3)]
            assert [a.status for a in answers] == [503] * 3 and len(parsed) == before
            ids = [a.headers["x-request-id"] for a in answers]
            assert len(set(ids)) == 3 and all(re.fullmatch(r"[0-9a-f]{32}", i) for i in ids)
            assert [a.json() for a in answers] == [{"error": FULL, "request_id": i} for i in ids]
            for i in range(300):  # more heads than are kept, each its own, then the first again
                (answer,) = await conn.send(post(headers=f"x-request-id: client-{i % 290}\r\n"))
                assert answer.status == 503 and answer.headers["x-request-id"] == f"client-{i % 290}"
                assert answer.json() == {"error": FULL, "request_id": f"client-{i % 290}"}
            assert len(parsed) == before and len(server.shedding._heads) <= 256
            # an id the server does not take: a new one each time, not one kept with the head
            malformed = [(await conn.send(post(headers="x-request-id: not one!\r\n")))[0] for _ in range(2)]
            assert len({a.headers["x-request-id"] for a in malformed}) == 2
            (mixed,) = await conn.send(post(headers="X-Request-Id: Mixed.Case-1\r\n"))
            assert mixed.headers["x-request-id"] == "Mixed.Case-1" and mixed.json()["request_id"] == "Mixed.Case-1"
            # a head over the size kept (2 KiB) is read again each time, and refused alike
            big = post(headers=f"x-pad: {'a' * 2100}\r\n")
            for _ in range(2):
                (answer,) = await conn.send(big)
                assert answer.status == 503 and answer.json()["error"] == FULL
            assert len(parsed) == before and big[: big.index(b"\r\n\r\n") + 4] not in server.shedding._heads
            # another body length is another head; a body not all in this read goes to the parser, seen or not
            (longer,) = await conn.send(post(body=b'{"inputs": []} '))
            assert longer.status == 503 and len(parsed) == before
            request = post()
            for _ in range(2):
                conn.feed(request[:-3])
                (answer,) = await conn.send(request[-3:])
                assert answer.status == 503
            assert len(parsed) == before + 2

    run(main)


@pytest.mark.parametrize("name", ["Content-Length", "CONTENT-LENGTH", "content-length"])
def test_a_whole_read_is_taken_whatever_the_case_of_its_field_names(name: str, parsed: list[int]) -> None:
    async def main() -> None:
        async with serving() as server:
            conn = await server.refusing_connection()
            before = len(parsed)
            (answer,) = await conn.send(post().replace(b"content-length", name.encode()))
            assert answer.status == 503 and len(parsed) == before
            (live,) = await conn.send(get("/v2/health/live"))  # the parser still between requests
            assert live.status == 200

    run(main)


def test_a_connection_refused_by_whole_reads_is_closed_the_keep_alive_time_after_its_last_answer() -> None:
    """Such a refusal leaves the keep-alive timer armed rather than cancel and arm it: when due, the timer waits
    out the keep-alive time from the last answer, then closes the connection."""

    async def main() -> None:
        async with serving() as server:
            conn = await server.refusing_connection()
            conn.protocol.timeout_keep_alive = 0.4
            await conn.send(post())
            for _ in range(3):
                await asyncio.sleep(0.25)  # a timer from the first answer would have closed it by the second sleep
                (answer,) = await conn.send(post())
                assert answer.status == 503 and not conn.wire.closed
            last = time.monotonic()
            await asyncio.sleep(0.2)
            assert not conn.wire.closed
            while not conn.wire.closed:
                assert time.monotonic() - last < 5.0
                await asyncio.sleep(0.01)
            assert time.monotonic() - last >= 0.39

    run(main)


def test_the_unread_body_is_dropped_without_a_cycle_and_the_connection_kept_for_the_next_request(
    cycles: list[Any],
) -> None:
    async def main() -> None:
        async with serving() as server:
            conn = await server.refusing_connection()
            protocol = conn.protocol
            request = post(body=b"[" + b" " * 200_000 + b"]")
            (refused,) = await conn.send(request[:300])  # refused before most of its body has come
            assert refused.status == 503 and protocol.cycle is None and cycles == cycles[:1]
            # counted as any answer; not idle while its body comes: the body's deadline, not the keep-alive timer
            assert protocol.timeout_keep_alive_task is None and protocol._body_timer is not None
            assert protocol.server_state.total_requests == 1
            for start in range(300, len(request), 65536):
                conn.feed(request[start : start + 65536])  # dropped as it comes: no cycle takes it
            assert protocol.timeout_keep_alive_task is not None and protocol._body_timer is None  # idle now
            (again,) = await conn.send(post())  # its body in the same read
            assert again.status == 503 and protocol.cycle is None and protocol.server_state.total_requests == 2
            (live,) = await conn.send(get("/v2/health/live"))
            assert live.status == 200
            server.room()
            (served,) = await conn.send(post())
            assert served.status == 200 and served.json()["outputs"][0]["data"] == [0.0]
            assert len(cycles) == 1 + 2 and not conn.wire.closed and len(server.paths) == 3
            assert protocol.server_state.total_requests == 4

    run(main)


def test_requests_pipelined_behind_a_refusal_on_the_head_are_answered_in_order(cycles: list[Any]) -> None:
    """Two refused with no answer before them still to come (no cycle), the probe after them runs, the refusal
    behind the probe waits for its answer (its cycle), and the last, once the overload is over, is served."""

    async def main() -> None:
        async with serving() as server:
            conn = await server.refusing_connection()
            made = len(cycles)
            answers = await conn.send(post() + post("/predict") + get("/v2/health/live") + post(), 4)
            assert [a.status for a in answers] == [503, 503, 200, 503] and len(cycles) == made + 2
            assert answers[1].headers["content-type"] == "application/problem+json"
            assert len(server.paths) == 2 and len(server.rejected()) == 4
            server.room()
            answers = await conn.send(post(headers="x-request-id: a\r\n") + post(headers="x-request-id: b\r\n"), 2)
            assert [(a.status, a.headers["x-request-id"]) for a in answers] == [(200, "a"), (200, "b")]

    run(main)


@pytest.mark.parametrize(("version", "headers"), [("1.1", "connection: close\r\n"), ("1.0", "")])
def test_nothing_read_behind_a_refusal_that_closes_the_connection_is_run_or_counted(
    version: str, headers: str, cycles: list[Any]
) -> None:
    async def main() -> None:
        async with serving() as server:
            conn = await server.refusing_connection()
            made, rejected = len(cycles), len(server.rejected())
            (shed,) = await conn.send(post(headers=headers, version=version) + get("/v2/health/live") + post())
            assert shed.status == 503 and shed.headers["connection"] == "close" and conn.wire.closed
            await asyncio.sleep(0.01)
            assert len(conn.wire.writes) == 1 and len(cycles) == made and len(server.paths) == 1
            assert len(server.rejected()) == rejected + 1

    run(main)


def test_the_access_line_and_the_event_come_with_a_refusal_on_the_head_and_uvicorns_line_if_it_logs(
    caplog: pytest.LogCaptureFixture, cycles: list[Any]
) -> None:
    """uvicorn's own access line (off in modelapi's server, which writes its own) is the cycle's too."""
    REPORTER.flush()
    caplog.set_level(logging.INFO)

    async def main() -> None:
        async with serving() as server:
            server.full()
            await server.refusing()
            caplog.clear()
            direct = server.connect(port=1, uvicorn_log=True)
            made = len(cycles)
            await direct.send(post("/predict?x=1", headers="x-forwarded-for: 10.1.2.3\r\n"))
            assert len(cycles) == made and server.rejected()[-1] == RequestRejected(
                "sleepy", "records", "overloaded", 503
            )
            piped = server.connect(port=2, uvicorn_log=True)
            await piped.send(get("/v2/health/live") + post("/predict?x=1", headers="x-forwarded-for: 10.1.2.3\r\n"), 2)
            assert len(cycles) == made + 2 and len(server.rejected()) == 3

    run(main)
    uvicorns = [r.getMessage() for r in caplog.records if r.name == "uvicorn.access"]
    assert uvicorns == [
        '10.1.2.3:0 - "POST /predict?x=1 HTTP/1.1" 503',
        '127.0.0.1:2 - "GET /v2/health/live HTTP/1.1" 200',
        '10.1.2.3:0 - "POST /predict?x=1 HTTP/1.1" 503',
    ]
    ours = [(r.status, r.path, r.client) for r in access_lines(caplog)]
    assert ours == [
        (503, "/predict?x=1", "10.1.2.3:0"),
        (200, "/v2/health/live", "127.0.0.1:2"),
        (503, "/predict?x=1", "10.1.2.3:0"),
    ]


def test_a_connection_dropping_a_refused_requests_body_has_no_request_in_progress_at_shutdown() -> None:
    async def main() -> None:
        async with serving() as server:
            conn = await server.refusing_connection()
            (shed,) = await conn.send(post(body=b"[" + b" " * 10_000 + b"]")[:500])
            assert shed.status == 503 and not conn.wire.closed
            conn.protocol.shutdown()  # as uvicorn's Server.shutdown does for each connection
            assert conn.wire.closed

    run(main)


def test_a_refused_head_waiting_its_turn_at_shutdown_is_answered_then_its_connection_closes() -> None:
    """As a request in progress is at shutdown (uvicorn ends its connection after its answer, ``connection:
    close``), so is a head read but waiting its turn (pacing), refused on its head when shutdown takes it."""

    async def main() -> None:
        async with serving() as server:
            server.full()
            await server.refusing()
            pacing = Pacing(slice_s=0.0)
            conn = server.connect(pacing=pacing)
            conn.feed(post())
            assert [c for c, _ in pacing.waiting] == [conn.protocol] and not conn.wire.writes
            conn.protocol.shutdown()  # as uvicorn's Server.shutdown does for each connection
            (shed,) = await conn.answers()
            assert shed.status == 503 and shed.headers["connection"] == "close" and conn.wire.closed

    run(main)


def test_heads_refused_on_their_heads_are_paced_as_requests_in_progress() -> None:
    """A refusal on the head leaves no task behind, yet is the turn's work: while the gate refuses, a run of heads
    is paced as when each refusal was a task (here, a slice of 0, every head of a run waits its turn)."""

    async def main() -> None:
        async with serving() as server:
            server.full()
            await server.refusing()
            pacing = Pacing(slice_s=0.0)
            conns = [server.connect(port=10 + i, pacing=pacing) for i in range(3)]
            for conn in conns:
                conn.feed(post())
            assert [c for c, _ in pacing.waiting] == [conn.protocol for conn in conns]
            assert not any(conn.wire.writes for conn in conns)
            for conn in conns:
                (shed,) = await conn.answers()
                assert shed.status == 503
            server.room()
            server.gate.refusing = False  # admitting again: a lone head is not paced
            (served,) = await server.connect(port=20, pacing=pacing).send(post())
            assert served.status == 200 and not pacing.waiting

    run(main)


# the bound on their access lines ----------------------------------------------------------------------------------
def test_the_bound_admits_the_first_n_refusals_of_each_second_from_the_first_after_the_last_one_ended() -> None:
    clock = Clock(100.0)
    lines = RefusalLines(3, clock)
    assert [lines.admit() for _ in range(5)] == [True, True, True, False, False]
    clock.now = 100.999
    assert not lines.admit()  # the same second
    clock.now = 101.0  # a second after its first refusal: a new one
    assert [lines.admit() for _ in range(4)] == [True, True, True, False]
    clock.now = 105.5  # quiet seconds in between: the next second begins with the next refusal
    assert [lines.admit() for _ in range(4)] == [True, True, True, False]
    clock.now = 106.499
    assert not lines.admit()
    clock.now = 106.5
    assert lines.admit()


def test_the_bounds_counts_are_exact_across_window_boundaries() -> None:
    clock = Clock(100.0)
    lines = RefusalLines(7, clock)
    admitted: dict[int, int] = {}
    for ms in range(3500):  # a refusal a millisecond for 3.5 s: windows from 100.0, 101.0, 102.0, 103.0
        clock.now = 100 + ms / 1000
        if lines.admit():
            admitted[ms // 1000] = admitted.get(ms // 1000, 0) + 1
    assert admitted == {0: 7, 1: 7, 2: 7, 3: 7}


def test_a_bound_of_0_admits_none() -> None:
    clock = Clock(100.0)
    lines = RefusalLines(0, clock)
    assert not any(lines.admit() for _ in range(10))
    clock.now += 5
    assert not lines.admit()


def test_a_bound_of_0_is_spent_at_every_moment_so_no_refusal_goes_the_parsers_way_for_its_line() -> None:
    """``spent`` sends a refusal whole in one read past the parser only once this second's lines are written; with
    none to write, that is always, the first refusal of each second too (it went through the parser before)."""
    clock = Clock(100.0)
    lines = RefusalLines(0, clock)
    assert lines.spent()  # before any refusal
    lines.admit()
    clock.now += 1.5  # the window has ended
    assert lines.spent()
    some = RefusalLines(2, clock)
    assert not some.spent()  # lines still to write this second
    some.admit()
    some.admit()
    assert some.spent()
    clock.now += 1.0
    assert not some.spent()  # a new second's


async def flood(server: Server, port: int, connections: int, each: int) -> list[int]:
    """``connections`` new connections from ``port`` on, each sending ``each`` requests pipelined in one read,
    all refused on their heads (no answer still to come before them: the protocol writes each)."""
    statuses: list[int] = []
    for i in range(connections):
        conn = server.connect(port=port + i)
        statuses += [answer.status for answer in await conn.send(post() * each, each)]
    return statuses


def unlogged(caplog: pytest.LogCaptureFixture) -> tuple[int, int]:
    """The refusals and those without an access line that the rejections warnings counted."""
    REPORTER.flush()
    warnings = [r for r in caplog.records if r.name == "modelapi.rejections"]
    for warning in warnings:  # each that counts refusals without a line says so, and why
        assert (" without an access line (access_log_refusals_per_s)" in warning.getMessage()) == (warning.unlogged > 0)
    return sum(r.refused for r in warnings), sum(r.unlogged for r in warnings)


def test_a_flood_of_refusals_on_the_head_writes_the_bounds_lines_a_second_and_every_503_still_comes(
    access: pytest.LogCaptureFixture, cycles: list[Any]
) -> None:
    clock = Clock(100.0)

    async def main() -> None:
        async with serving(access_log_refusals_per_s=5) as server:
            assert server.shedding.lines is not None
            server.shedding.lines.clock = clock
            server.full()
            await server.refusing()  # the app's refusal: its line, outside the bound
            assert await flood(server, 100, 30, 3) == [503] * 90
            made = len(cycles)
            piped = server.connect(port=200)  # behind the probe, the cycle runs the refusal: bounded alike
            answers = await piped.send(get("/v2/health/live") + post(), 2)
            assert [a.status for a in answers] == [200, 503] and len(cycles) == made + 2
            assert len(server.paths) == 2 and len(server.rejected()) == 1 + 91  # the app's refusal, the probe
            assert all(a.headers["retry-after"] and a.headers["x-request-id"] for a in answers[1:])
            clock.now += 1.0  # the next second: its own lines
            assert await flood(server, 300, 2, 4) == [503] * 8
            server.gate.refusing = False
            await server.refusing()  # the app's again, past the bound: still its line
            assert len(server.rejected()) == 1 + 91 + 8 + 1

    run(main)
    lines = access_lines(access)
    assert [(r.status, r.client) for r in lines] == [
        (503, "127.0.0.1:1"),  # the app's
        *[(503, f"127.0.0.1:{port}") for port in (100, 100, 100, 101, 101)],  # the first 5 of the second
        (200, "127.0.0.1:200"),  # the probe: no refusal
        *[(503, f"127.0.0.1:{port}") for port in (300, 300, 300, 300, 301)],  # the next second's 5
        (503, "127.0.0.1:1"),  # the app's
    ]
    assert unlogged(access) == (1 + 91 + 8 + 1, 86 + 3)


@pytest.mark.parametrize(("setting", "written"), [(None, 100), (0, 0), ("unbounded", 120)])
def test_the_default_0_and_unbounded_bound_a_flood_of_120_refusals_on_the_head_in_one_second(
    access: pytest.LogCaptureFixture, setting: int | str | None, written: int
) -> None:
    clock = Clock(100.0)
    options = {} if setting is None else {"access_log_refusals_per_s": setting}

    async def main() -> None:
        async with serving(**options) as server:
            if server.shedding.lines is not None:
                server.shedding.lines.clock = clock
            server.full()
            await server.refusing()
            assert await flood(server, 100, 40, 3) == [503] * 120
            assert len(server.rejected()) == 1 + 120

    run(main)
    head = [r for r in access_lines(access) if r.client != "127.0.0.1:1"]
    assert len(head) == written and all(r.status == 503 for r in head)
    assert unlogged(access) == (1 + 120, 120 - written)


def test_with_the_access_log_off_no_refusal_counts_as_left_out(caplog: pytest.LogCaptureFixture) -> None:
    """Only the bound leaves lines out: with ``--log-level warning`` none is written anyway, and the warning
    does not say any was left out."""
    REPORTER.flush()
    caplog.set_level(logging.WARNING, logger="modelapi.access")
    caplog.clear()

    async def main() -> None:
        async with serving(access_log_refusals_per_s=0) as server:
            server.full()
            await server.refusing()
            assert await flood(server, 100, 3, 3) == [503] * 9

    run(main)
    assert access_lines(caplog) == []
    assert unlogged(caplog) == (1 + 9, 0)


def test_with_no_refusal_lines_a_seconds_first_refusal_in_one_read_skips_the_parser_too(
    access: pytest.LogCaptureFixture, parsed: list[int]
) -> None:
    """With the access log on and no refusal lines to write (``access_log_refusals_per_s=0``), every refusal whole
    in one read is the protocol's, the first of each second too: it went through the parser for a line it would
    not write."""

    async def main() -> None:
        async with serving(access_log_refusals_per_s=0) as server:
            server.full()
            await server.refusing()
            before, lines = len(parsed), len(access_lines(access))  # (the app's own refusal writes its line)
            (answer,) = await server.connect(port=2).send(post())
            assert answer.status == 503 and len(parsed) == before and len(access_lines(access)) == lines

    run(main)


def test_counts_not_yet_written_are_written_when_the_app_stops(access: pytest.LogCaptureFixture) -> None:
    """The refusals of a last second, written when it ends (a timer on the loop), are written at the app's
    shutdown instead when it comes first: none is lost with the loop."""

    async def main() -> None:
        async with serving(access_log_refusals_per_s=0) as server:
            server.full()
            await server.refusing()
            assert await flood(server, 100, 1, 3) == [503] * 3

    run(main)
    warnings = [r for r in access.records if r.name == "modelapi.rejections"]  # no REPORTER.flush() here
    assert (sum(r.refused for r in warnings), sum(r.unlogged for r in warnings)) == (4, 3)


def test_a_retry_held_when_the_server_stops_is_answered_at_once_and_its_connection_closed() -> None:
    """uvicorn lets a request in progress finish before it stops: a held one would keep the shutdown waiting until
    its Retry-After (up to 30 s) only to be told "retry now"."""

    async def main() -> None:
        async with serving(hold_early_retries=True) as server:
            server.full()
            conn = server.connect()
            (first,) = await conn.send(post())  # the app's refusal: Retry-After 1
            assert first.status == 503 and first.headers["retry-after"] == "1"
            conn.feed(post())  # at once: held
            await asyncio.sleep(0.05)
            started = time.monotonic()
            conn.protocol.shutdown()
            (held,) = await conn.answers(timeout=1.0)
            assert held.status == 503 and held.headers["retry-after"] == "0"
            assert held.headers["connection"] == "close" and time.monotonic() - started < 0.5

    run(main)


@pytest.mark.parametrize(
    ("body", "kept"),
    [
        pytest.param(PROBLEM.body, True, id="problem"),
        pytest.param(V2_ERRORS.body, True, id="v2"),
        pytest.param(lambda s, t, d, p, r: {"error": d}, False, id="no-id"),
        pytest.param(lambda s, t, d, p, r: {"error": d, "id": r, "again": r}, False, id="the-id-twice"),
        pytest.param(lambda s, t, d, p, r: {"error": d, "id": r.upper()}, False, id="the-id-changed"),
        pytest.param(lambda s, t, d, p, r: {"error": d, "id": r, "n": len(set(r))}, False, id="more-of-the-id"),
        pytest.param(lambda s, t, d, p, r: {"error": d, "ref": "x" + r}, False, id="the-id-in-a-string"),
    ],
)
def test_a_refusal_body_is_kept_but_for_its_id_only_for_a_style_that_writes_the_id_as_given(
    body: Any, kept: bool
) -> None:
    """The refusal's body is kept per style, detail and path, and the request id put in its place, only for a style
    whose body holds the id once, as given, and nothing else of it; any other is built whole for each refusal."""
    assert _writes_id_as_given(ErrorStyle("s", "application/json", "S", body)) is kept


def asked_on_heads(shedding: Shedding) -> list[bytes]:
    """The targets ``shedding.app_for`` is asked about from now on (on the heads the parser completes)."""
    asked: list[bytes] = []
    app_for = shedding.app_for

    def noted(method: bytes, url: bytes, app: Any, arrived: float) -> Any:
        asked.append(url)
        return app_for(method, url, app, arrived)

    shedding.app_for = noted  # type: ignore[method-assign]
    return asked


def refused_on_the_head(shedding: Shedding, path: str = INFER, headers: bytes = b"") -> bytes | None:
    """``refuse_read``'s answer to one whole request, as the protocol would ask for it (no access lines)."""
    body = BODIES["/v2/" if path.startswith("/v2/") else "/"]
    read = b"POST %s HTTP/1.1\r\nhost: x\r\n%scontent-length: %d\r\n\r\n%s" % (path.encode(), headers, len(body), body)
    answer = shedding.refuse_read(read, time.monotonic(), 1, False, "", 65536)
    assert answer is None or isinstance(answer, bytes)
    return answer


def test_a_head_read_before_the_refusals_are_bound_again_is_read_again() -> None:
    """What was kept of a head holds for one binding: bound again with CORS on, a browser's request seen with it off
    goes to the app (its CORS headers); bound with authentication on, a body already given names no model."""

    async def main() -> None:
        async with serving(access_log_refusals_per_s=0) as server:
            server.full()
            await server.refusing()
            shedding, dataplane = server.shedding, server.dataplane
            routes = [
                (INFER.replace("sleepy", "{name}"), "v2", V2_ERRORS),
                ("/models/{name}/predict", "records", PROBLEM),
            ]
            shedding.bind(dataplane, routes, access_log_refusals_per_s=0)
            origin = b"origin: https://app.example\r\n"
            assert refused_on_the_head(shedding, headers=origin) is not None
            shedding.bind(dataplane, routes, cors=True, access_log_refusals_per_s=0)
            assert refused_on_the_head(shedding, headers=origin) is None
            named = refused_on_the_head(shedding, "/models/sleepy/predict")
            assert named is not None and orjson.loads(named.split(b"\r\n\r\n", 1)[1])["detail"] == FULL
            shedding.bind(dataplane, routes, private=True, access_log_refusals_per_s=0)
            private = refused_on_the_head(shedding, "/models/sleepy/predict")
            assert private is not None and orjson.loads(private.split(b"\r\n\r\n", 1)[1])["detail"] == ANY_MODEL

    run(main)


@pytest.mark.parametrize("first", ["error", "request_id", "1", "sleepy"])
def test_a_first_id_found_elsewhere_in_the_body_keeps_no_body_and_the_next_ones_are_whole(first: str) -> None:
    """A client's id that the body holds elsewhere too (a word of the detail, a key) keeps nothing; the next refusals'
    bodies are whole and their own, kept or not."""

    async def main() -> None:
        async with serving(access_log_refusals_per_s=0) as server:
            server.full()
            await server.refusing()
            for rid in (first, "abc-1", "abc-2"):
                answer = refused_on_the_head(server.shedding, headers=b"x-request-id: %s\r\n" % rid.encode())
                assert answer is not None
                assert orjson.loads(answer.split(b"\r\n\r\n", 1)[1]) == {"error": FULL, "request_id": rid}

    run(main)


def test_a_style_that_does_not_write_the_id_as_given_is_built_whole_for_each_refusal() -> None:
    async def main() -> None:
        async with serving(access_log_refusals_per_s=0) as server:
            server.full()
            await server.refusing()
            odd = ErrorStyle(
                "odd", "application/json", "Odd", lambda s, t, d, p, r: {"error": d, "id": r, "n": len(set(r))}
            )
            server.shedding.bind(server.dataplane, [("/models/{name}/predict", "records", odd)])
            for rid in ("abc-1", "aaa-2"):
                answer = refused_on_the_head(
                    server.shedding, "/models/sleepy/predict", b"x-request-id: %s\r\n" % rid.encode()
                )
                assert answer is not None
                assert orjson.loads(answer.split(b"\r\n\r\n", 1)[1]) == {"error": FULL, "id": rid, "n": len(set(rid))}

    run(main)


def test_each_refusal_body_is_its_own_paths() -> None:
    """The refusal bodies kept are kept per path: in problem+json, each names its own ``instance``."""

    async def main() -> None:
        async with serving(sleepy(), sleepy("other"), access_log_refusals_per_s=0) as server:
            server.full("sleepy", "other")
            await server.refusing()
            for path in ("/models/sleepy/predict", "/models/other/predict", "/models/sleepy/predict"):
                answer = refused_on_the_head(server.shedding, path)
                assert answer is not None
                assert orjson.loads(answer.split(b"\r\n\r\n", 1)[1])["instance"] == path

    run(main)
