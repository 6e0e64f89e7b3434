"""The access log and request context in process: one line per request with its numbers, the request id (and
model) on every record written while it is served, keys never in any line, genuine 500s still at ERROR."""

from __future__ import annotations

import io
import json
import logging
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from helpers.keys import create_key
from helpers.logs import Collect, Latin1Stream, Stream, only_handlers
from modelapi import logs
from modelapi.http import access
from modelapi.http.app import create_app
from modelapi.security.keys import redact
from modelapi.settings import Settings
from toymodels import IrisClassifier, Regressor

ROW = {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}


class Captured:
    def __init__(self, log_format: str) -> None:
        self.stream = io.StringIO()
        self.handler = logs.make_handler(log_format, self.stream)

    def text(self) -> str:
        return self.stream.getvalue()

    def lines(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.text().splitlines()]


@pytest.fixture
def captured(request: pytest.FixtureRequest) -> Iterator[Captured]:
    cap = Captured(getattr(request, "param", "json"))
    root = logging.getLogger()
    logger = logging.getLogger("modelapi")
    level, root_level = logger.level, root.level
    root.addHandler(cap.handler)
    # other libraries' INFO records (httpx's request lines) stay out whatever an earlier test left the root at
    root.setLevel(logging.WARNING)
    logger.setLevel(logging.INFO)
    try:
        yield cap
    finally:
        root.removeHandler(cap.handler)
        root.setLevel(root_level)
        logger.setLevel(level)


def test_one_access_line_per_request_with_its_numbers(captured: Captured) -> None:
    with TestClient(create_app([IrisClassifier()], Settings()), raise_server_exceptions=False) as client:
        ok = client.post("/models/iris/predict?verbose=1", json=ROW, headers={"x-request-id": "my-id-1"})
        missing = client.get("/nope")
    assert ok.status_code == 200 and missing.status_code == 404
    access = [x for x in captured.lines() if x["logger"] == "modelapi.access"]
    assert len(access) == 2
    first, second = access
    assert first["request_id"] == "my-id-1" == ok.headers["x-request-id"]
    assert (first["method"], first["path"], first["status"]) == ("POST", "/models/iris/predict?verbose=1", 200)
    assert first["bytes"] == len(ok.content) and first["duration_ms"] >= 0 and first["client"]
    assert first["model"] == "iris" and first["level"] == "INFO"
    assert second["request_id"] == missing.headers["x-request-id"]
    assert (second["path"], second["status"], second["bytes"]) == ("/nope", 404, len(missing.content))
    assert "model" not in second


def test_no_access_line_when_the_level_hides_it(captured: Captured) -> None:
    logging.getLogger("modelapi").setLevel(logging.WARNING)
    with TestClient(create_app([IrisClassifier()], Settings())) as client:
        assert client.post("/predict", json=ROW).status_code == 200
    assert captured.text() == ""


def test_a_500_is_still_an_error_with_its_traceback_and_request_id(captured: Captured) -> None:
    with TestClient(create_app([Regressor()], Settings()), raise_server_exceptions=False) as client:
        r = client.post("/models/regressor/predict", json={"a": -999, "b": 1})
    assert r.status_code == 500
    rid = r.headers["x-request-id"]
    errors = [x for x in captured.lines() if x["level"] == "ERROR"]
    assert errors and all(x["request_id"] == rid for x in errors)
    assert any("RuntimeError: secret internal detail" in x.get("exception", "") for x in errors)
    assert all(x["model"] == "regressor" for x in errors)


@pytest.mark.parametrize("captured", ["text", "json"], indirect=True)
def test_keys_and_authorization_are_never_logged(captured: Captured, tmp_path: Path) -> None:
    key = create_key(tmp_path)
    secret = key.rsplit("_", 1)[1]
    wrong = "mk_0badc0de_" + "f" * 64
    settings = Settings(auth="on", state_dir=tmp_path)
    with TestClient(create_app([IrisClassifier()], settings), raise_server_exceptions=False) as client:
        assert client.post("/predict", json=ROW, headers={"Authorization": f"Bearer {key}"}).status_code == 200
        assert client.post("/predict", json=ROW, headers={"X-API-Key": key}).status_code == 200
        assert client.post("/predict", json=ROW, headers={"Authorization": f"Bearer {wrong}"}).status_code == 401
        assert client.post("/predict", json=ROW, headers={"X-API-Key": wrong}).status_code == 401
        assert client.get(f"/models?api_key={key}").status_code == 401
        assert client.get(f"/models?api_key={key.replace('_', '%5F')}").status_code == 401
        assert client.get(f"/models/{key}").status_code in (401, 404)
    text = captured.text()
    assert text.count("modelapi.access") == 7
    assert secret not in text and "f" * 64 not in text
    assert "Bearer" not in text and "mk_0123" not in text
    assert f"{key.rsplit('_', 1)[0]}_<redacted>" in text  # the key id stays, for searching the log


def test_the_access_record_is_the_one_make_record_makes() -> None:
    """The record from the prototype (http/access.py) holds every field ``Logger.makeRecord`` would give it."""
    from modelapi.http import access

    args = ("127.0.0.1:1", "POST", "/predict", "1.1", 200, 10, 1.5, "rid")
    extra = {"method": "POST", "status": 200, "request_id": "rid"}
    for _ in range(2):  # the first makes the prototype, the second copies it
        fast = access._PROTOTYPE.record(args, extra)
        made = access.ACCESS_LOG.makeRecord(
            access.ACCESS_LOG.name, logging.INFO, access.__file__, access._LINENO, access._FORMAT, args, None,
            access._FUNC, extra,
        )  # fmt: skip
        mine, theirs = dict(fast.__dict__), dict(made.__dict__)
        for key in ("created", "msecs", "relativeCreated"):
            assert abs(mine.pop(key) - theirs.pop(key)) < 1000  # both from the clock, a moment apart
        assert mine == theirs
        assert fast.getMessage() == made.getMessage()


def test_the_access_record_names_its_own_task() -> None:
    """From Python 3.12 a record carries the asyncio task that logged it (``taskName``): each line names its own
    request's task, not the one whose line made the prototype (on 3.11 records have no such field)."""
    import asyncio

    from modelapi.http import access

    args = ("127.0.0.1:1", "POST", "/predict", "1.1", 200, 10, 1.5, "rid")

    async def line() -> tuple[Any, Any]:
        made = access.ACCESS_LOG.makeRecord(
            access.ACCESS_LOG.name, logging.INFO, access.__file__, access._LINENO, access._FORMAT, args, None,
            access._FUNC,
        )  # fmt: skip
        return getattr(access._PROTOTYPE.record(args, {}), "taskName", None), getattr(made, "taskName", None)

    async def main() -> list[tuple[Any, Any]]:
        return [await asyncio.create_task(line(), name=f"request-{i}") for i in range(2)]

    for mine, theirs in asyncio.run(main()):
        assert mine == theirs


# the line written by modelapi's own handler directly ----------------------------------------------------------
KEY = "mk_0123abcd_" + "0123456789abcdef" * 4
#: created and msecs for every record and line below, so two lines of the same request are the same bytes
NOW = (1714566896.0999, 99.0)


class _Ctx:
    def __init__(self, request_id: str | None, model: str | None, version: str | None) -> None:
        self.request_id = request_id
        self.model = model
        self.version = version


class _NoRecords:
    """Stands in for the record prototype where the line must be written without a record."""

    def record(self, args: tuple[Any, ...], extra: dict[str, Any]) -> logging.LogRecord:
        raise AssertionError("a record was made")


def _scope(path: str = "/models/iris/predict", query: bytes = b"verbose=1") -> dict[str, Any]:
    return {
        "type": "http",
        "method": "POST",
        "path": path,
        "query_string": query,
        "http_version": "1.1",
        "client": ("127.0.0.1", 55886),
    }


def _write(scope: dict[str, Any], rid: str = "rid-1", status: int = 200) -> None:
    access.access_line(scope, rid, status, 52, 0.0014)


def _handler(log_format: str, stream: Stream) -> logs.LogHandler:
    """``json``, ``text``, or ``ascii``: JSON on a stream that is not UTF-8."""
    return logs.make_handler("json" if log_format == "ascii" else log_format, stream)


def _stream(log_format: str) -> Stream:
    return Latin1Stream() if log_format == "ascii" else Stream()


@pytest.fixture
def fixed_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(access, "_now", lambda: NOW)
    monkeypatch.setattr(access, "_created", lambda: NOW[0])  # the time of a line written without its record


@pytest.mark.usefixtures("fixed_clock")
@pytest.mark.parametrize("log_format", ["json", "text", "ascii"])
@pytest.mark.parametrize("context", [False, True])
@pytest.mark.parametrize(
    ("path", "query", "rid"),
    [
        ("/models/iris/predict", b"verbose=1", "rid-1"),
        ("/predict", b"", "rid-1"),
        (f"/models/{KEY}", b"api_key=" + KEY.encode() + b"&x=1", "rid-1"),
        ("/predict", b"api_key=" + KEY.replace("_", "%5F").encode(), "rid-1"),
        ("/predict", b"", KEY),  # only the formatter's redaction catches this one (the middleware refuses such ids)
        ("/models/mod\u00e8le-\u6a21\u578b/predict", b"q=%C3%A9", "rid-1"),
    ],
)
def test_the_direct_line_is_the_line_logging_writes(
    log_format: str, context: bool, path: str, query: bytes, rid: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Alone on the root logger, modelapi's handler writes the access line without a record; with another handler
    beside it the record goes through logging. Same bytes, in the same writes and flushes, either way."""
    ctx_token = logs.CONTEXT.set(_Ctx("ctx-rid", "iris", "2") if context else None)
    trace_token = logs.TRACE_ID.set("ab" * 16 if context else None)
    try:
        direct = _stream(log_format)
        with only_handlers(_handler(log_format, direct)), monkeypatch.context() as patch:
            patch.setattr(access, "_PROTOTYPE", _NoRecords())
            _write(_scope(path, query), rid)
        logged = _stream(log_format)
        sink = Collect()
        with only_handlers(_handler(log_format, logged), sink):
            _write(_scope(path, query), rid)
    finally:
        logs.TRACE_ID.reset(trace_token)
        logs.CONTEXT.reset(ctx_token)
    assert len(sink.records) == 1
    assert direct.calls == logged.calls
    line, flush = direct.calls
    assert flush == Stream.FLUSH and line.endswith("\n") and line.count("\n") == 1
    assert KEY.rsplit("_", 1)[1] not in line
    assert ("mk_0123abcd_<redacted>" in line) is (b"api_key" in query or rid == KEY)
    if log_format == "text":
        assert line.startswith('INFO:     modelapi.access: 127.0.0.1:55886 - "POST /')
        return
    assert line.isascii() or log_format == "json"
    fields = json.loads(line)
    known = ["request_id", "trace_id", "model", "version"] if context else ["request_id"]
    extra = ["method", "path", "status", "duration_ms", "bytes", "client"]
    assert list(fields) == ["time", "level", "logger", "message", *known, *extra]
    assert fields["request_id"] == redact(rid)  # the request's own id wins over the context's
    assert fields["time"] == "2024-05-01T12:34:56.099Z" and fields["status"] == 200


def test_a_capture_handler_beside_it_still_gets_the_record(caplog: pytest.LogCaptureFixture) -> None:
    """pytest's caplog handler (on the root logger) gets each access record, and modelapi's handler its line."""
    stream = Stream()
    handler = logs.make_handler("json", stream)
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        with caplog.at_level(logging.INFO, logger="modelapi.access"):
            _write(_scope())
    finally:
        root.removeHandler(handler)
    (record,) = [r for r in caplog.records if r.name == "modelapi.access"]
    assert (
        record.getMessage()
        == '127.0.0.1:55886 - "POST /models/iris/predict?verbose=1 HTTP/1.1" 200 52 B 1.4 ms [rid-1]'
    )
    assert record.__dict__["path"] == "/models/iris/predict?verbose=1"
    (line,) = stream.getvalue().splitlines()
    assert json.loads(line)["path"] == "/models/iris/predict?verbose=1"


class _Shard(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.shard = 3
        return True


def _factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
    record = logging.LogRecord(*args, **kwargs)
    record.shard = 3
    return record


@pytest.mark.parametrize(
    "change",
    ["logger filter", "handler filter", "record factory", "formatter", "handler on modelapi", "not propagated"],
)
def test_anything_else_on_the_way_gets_the_record(change: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A filter, another record factory, another formatter, another handler up the chain: the record goes
    through logging, and what they do to it shows (here a ``shard`` field)."""
    stream = Stream()
    handler = logs.make_handler("json", stream)
    sink = Collect()
    parent = logging.getLogger("modelapi")
    if change == "logger filter":
        monkeypatch.setattr(access.ACCESS_LOG, "filters", [_Shard()])
    elif change == "handler filter":
        handler.addFilter(_Shard())
    elif change == "record factory":  # as a user or OpenTelemetry's logging instrumentation installs one
        monkeypatch.setattr(logging, "_logRecordFactory", logging.getLogRecordFactory())  # restored after
        logging.setLogRecordFactory(_factory)
    elif change == "formatter":
        handler.setFormatter(logging.Formatter("%(name)s %(status)s"))
    elif change == "handler on modelapi":
        monkeypatch.setattr(parent, "handlers", [sink])
    else:  # the access logger keeps its records to itself, and writes them with modelapi's handler and another
        monkeypatch.setattr(access.ACCESS_LOG, "handlers", [handler, sink])
        monkeypatch.setattr(access.ACCESS_LOG, "propagate", False)
    with only_handlers(handler), monkeypatch.context() as patch:
        patch.setattr(logs.LogHandler, "write_access", _not_called)
        _write(_scope())
    (line,) = stream.getvalue().splitlines()
    if change == "formatter":
        assert line == "modelapi.access 200"
    elif change in ("handler on modelapi", "not propagated"):
        assert len(sink.records) == 1 and json.loads(line)["status"] == 200
    else:
        assert json.loads(line)["shard"] == 3


@pytest.mark.parametrize("log_format", ["json", "text"])
def test_a_renamed_level_shows_in_the_line_written_without_its_record(
    log_format: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``logging.addLevelName`` renames INFO for the lines modelapi writes itself too, as for every record."""
    stream = Stream()
    handler = logs.make_handler(log_format, stream)
    monkeypatch.setitem(logging._levelToName, logging.INFO, "INFO")  # type: ignore[attr-defined]
    monkeypatch.setitem(logging._nameToLevel, "NOTICE", logging.INFO)  # type: ignore[attr-defined]
    logging.addLevelName(logging.INFO, "NOTICE")
    with only_handlers(handler):
        _write(_scope())
    (line,) = stream.getvalue().splitlines()
    if log_format == "json":
        assert json.loads(line)["level"] == "NOTICE"
    else:
        assert "NOTICE" in line.split("modelapi.access")[0]


def _not_called(*args: Any, **kwargs: Any) -> None:
    raise AssertionError("the line was written without its record")


@pytest.mark.parametrize("change", ["handler level", "logger disabled"])
def test_what_logging_would_not_write_is_not_written(change: str, monkeypatch: pytest.MonkeyPatch) -> None:
    stream = Stream()
    handler = logs.make_handler("json", stream)
    if change == "handler level":
        handler.setLevel(logging.WARNING)
    else:
        monkeypatch.setattr(access.ACCESS_LOG, "disabled", True)
    with only_handlers(handler):
        _write(_scope())
    assert stream.calls == []


class _Full(Stream):
    def write(self, s: str) -> int:
        raise OSError(28, "No space left on device")


def _free(lock: Any) -> bool:
    """Whether another thread can take ``lock`` now."""
    got: list[bool] = []
    other = threading.Thread(target=lambda: got.append(lock.acquire(blocking=False)))
    other.start()
    other.join()
    return got == [True]


@pytest.mark.usefixtures("fixed_clock")
@pytest.mark.parametrize("log_format", ["json", "text"])
def test_a_stream_that_fails_goes_to_handle_error_with_the_record(
    log_format: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As ``StreamHandler.emit``: the error goes to ``handleError`` with the record (made only then, when the
    handler wrote the line itself), the request goes on, and the handler's lock is free again."""
    seen: list[tuple[dict[str, Any], type[BaseException] | None]] = []

    def handle_error(record: logging.LogRecord) -> None:
        seen.append((dict(record.__dict__), sys.exc_info()[0]))

    written = logs.LogHandler.write_access
    direct_writes: list[bool] = []

    def write_access(self: logs.LogHandler, *args: Any) -> None:
        direct_writes.append(True)
        written(self, *args)

    monkeypatch.setattr(logs.LogHandler, "write_access", write_access)
    for alone in (True, False):
        handler = logs.make_handler(log_format, _Full())
        monkeypatch.setattr(handler, "handleError", handle_error)
        with only_handlers(handler, *(() if alone else (Collect(),))):
            _write(_scope())
        assert _free(handler.lock)
    direct, logged = seen
    assert direct_writes == [True]  # the first line, alone on the root logger, was written without logging
    assert direct[1] is OSError
    logged[0].pop("message", None)  # the text formatter's, set on the record before the write failed
    assert direct == logged
