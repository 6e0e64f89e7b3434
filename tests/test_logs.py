"""Log lines: the JSON formatter (valid JSON whatever a message holds, the fields), the text one, configure()
and the context hooks; the rejection reporter (at most one line a second per reason and model)."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import re
import sys
from typing import Any

import pytest

from helpers.clock import Clock
from helpers.logs import Collect, Latin1Stream, Stream
from modelapi import logs
from modelapi.errors import (
    EarlyRetry,
    InferenceError,
    InferenceTimeout,
    ModelNotReady,
    Overloaded,
    PayloadTooLarge,
    TooManyRequests,
)
from modelapi.http.rejections import RejectionReporter, reason_for
from modelapi.settings import Settings

KEY = "mk_0123abcd_" + "0123456789abcdef" * 4
TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


def record(
    msg: str, *args: Any, level: int = logging.INFO, name: str = "modelapi.test", **extra: Any
) -> logging.LogRecord:
    rec = logging.LogRecord(name, level, __file__, 1, msg, args, None)
    rec.__dict__.update(extra)
    return rec


def json_line(rec: logging.LogRecord, **kwargs: Any) -> dict[str, Any]:
    line = logs.JsonFormatter(**kwargs).format(rec)
    assert "\n" not in line
    parsed = json.loads(line)
    assert isinstance(parsed, dict)
    return parsed


@pytest.mark.parametrize(
    "message",
    [
        'a "quoted" word',
        "two\nlines\r\n",
        "tab\tand \\ backslash",
        "unicode: é ü 模型 🚀",
        "nul \x00 and \x1b[31m",
        "{}",
    ],
)
@pytest.mark.parametrize("ascii_only", [False, True])
def test_json_lines_stay_valid_json_whatever_the_message(message: str, ascii_only: bool) -> None:
    out = json_line(record("%s!", message), ascii_only=ascii_only)
    assert out["message"] == f"{message}!"
    if ascii_only:
        assert logs.JsonFormatter(ascii_only=True).format(record(message)).isascii()


def test_json_fields() -> None:
    rec = record(
        "hello %s", "world", level=logging.WARNING, request_id="r1", trace_id="t" * 32, model="iris", version="2"
    )
    rec.created = 1714566896.789
    out = json_line(rec)
    assert out == {
        "time": "2024-05-01T12:34:56.789Z",
        "level": "WARNING",
        "logger": "modelapi.test",
        "message": "hello world",
        "request_id": "r1",
        "trace_id": "t" * 32,
        "model": "iris",
        "version": "2",
    }
    plain = json_line(record("x"))
    assert set(plain) == {"time", "level", "logger", "message"}  # the rest only when known
    assert TIME.match(plain["time"])


def test_json_extra_fields_and_exceptions() -> None:
    try:
        raise ValueError('bad "value"\nsecond line')
    except ValueError:
        rec = logging.LogRecord("m", logging.ERROR, __file__, 1, "failed", (), sys.exc_info())
    rec.__dict__.update(status=503, path="/x", color_message="\x1b[1mfailed\x1b[0m", _private=1, obj=object())
    out = json_line(rec)
    assert out["status"] == 503 and out["path"] == "/x"
    assert "color_message" not in out and "_private" not in out
    assert isinstance(out["obj"], str)  # what orjson cannot encode is written as its str()
    assert out["exception"].startswith("Traceback (most recent call last):")
    assert 'ValueError: bad "value"\nsecond line' in out["exception"]


def test_keys_are_redacted_in_both_formats() -> None:
    try:
        raise RuntimeError(f"token {KEY}")
    except RuntimeError:
        exc = sys.exc_info()
    rec = logging.LogRecord("m", logging.ERROR, __file__, 1, "key %s in %s", (KEY, "args"), exc)
    rec.path = f"/x?k={KEY}"
    text = logs.TextFormatter().format(rec)
    line = logs.JsonFormatter().format(rec)
    for out in (text, line):
        assert KEY.rsplit("_", 1)[1] not in out
        assert "mk_0123abcd_<redacted>" in out
    json.loads(line)


def test_rfc3339_milliseconds() -> None:
    assert logs.rfc3339(0.0) == "1970-01-01T00:00:00.000Z"
    assert logs.rfc3339(1714566896.0999) == "2024-05-01T12:34:56.099Z"
    assert logs.rfc3339(1714566897.5) == "2024-05-01T12:34:57.500Z"


@pytest.mark.parametrize(
    "created", [0.0, 1714566896.0999, 1714566896.789, 1714566897.5, 1714566899.9995, 1714566899.99999999]
)
@pytest.mark.parametrize("ascii_only", [False, True])
def test_a_line_written_without_its_record_has_the_formatters_time(created: float, ascii_only: bool) -> None:
    """``LogHandler.write_access`` and ``JsonFormatter`` on the record it stands for: the same line, time
    included, for the same ``created``."""
    stream = Latin1Stream() if ascii_only else Stream()
    handler = logs.make_handler("json", stream)
    fields: dict[str, Any] = {"path": "/x", "status": 200, "request_id": "r1"}
    handler.write_access("modelapi.access", created, "%s %d", ("mod\u00e8le", 200), fields, _no_record)
    rec = record("%s %d", "mod\u00e8le", 200, name="modelapi.access", **fields)
    rec.created = created
    assert stream.calls == [logs.JsonFormatter(ascii_only=ascii_only).format(rec) + "\n", Stream.FLUSH]
    assert json.loads(stream.calls[0])["time"] == logs.rfc3339(created)


@pytest.mark.parametrize(
    "fields",
    [
        {"request_id": "r1", "method": "POST", "path": "/x", "status": 200},  # the access line's shape
        {"method": "POST", "request_id": "r1", "status": 200},  # its id after an extra key
        {"request_id": None, "path": "/x"},  # a known key given as None: the context's, or none
        {"model": "m2", "request_id": "r1", "trace_id": "cd" * 16, "version": "7", "path": "/x"},
        {"version": "7", "path": "/x", "model": None},
        {"path": "/x", "_private": 1, "request_id": "r1"},  # not an extra key, not a known one
        {"request_id": "r1", "taskName": "t", "status": 200},  # a standard attribute
        {},
    ],
)
@pytest.mark.parametrize("context", [False, True])
def test_a_line_written_without_its_record_has_the_formatters_keys(fields: dict[str, Any], context: bool) -> None:
    """Whichever fields and context: ``write_access`` writes the keys ``JsonFormatter`` writes for the record
    ``ContextFilter`` has seen, in the same order, with the same values (twice: the second from its cached plan)."""
    ctx_token = logs.CONTEXT.set(_Ctx("ctx-rid", "iris", "3") if context else None)
    trace_token = logs.TRACE_ID.set("ab" * 16 if context else None)
    try:
        for _ in range(2):
            stream = Stream()
            handler = logs.make_handler("json", stream)
            handler.write_access("modelapi.access", 1714566896.0999, "%s", ("m",), fields, _no_record)
            rec = record("%s", "m", name="modelapi.access", **fields)
            rec.created = 1714566896.0999
            logs.ContextFilter().filter(rec)
            assert stream.calls == [logs.JsonFormatter().format(rec) + "\n", Stream.FLUSH]
    finally:
        logs.TRACE_ID.reset(trace_token)
        logs.CONTEXT.reset(ctx_token)


def _no_record() -> logging.LogRecord:
    raise AssertionError("a record was made")


def test_a_handler_writes_lines_itself_only_as_make_handler_made_it() -> None:
    for log_format in ("json", "text"):
        assert logs.make_handler(log_format, io.StringIO()).untouched()
    other_format = logs.make_handler("json", io.StringIO())
    other_format.setFormatter(logs.JsonFormatter())
    another_filter = logs.make_handler("json", io.StringIO())
    another_filter.addFilter(logs.ContextFilter())
    quiet = logs.make_handler("text", io.StringIO())
    quiet.setLevel(logging.WARNING)
    own_text = logs.LogHandler(io.StringIO(), logs.TextFormatter("%(asctime)s %(message)s"))
    assert not any(h.untouched() for h in (other_format, another_filter, quiet, own_text))


class _Ctx:
    def __init__(self, request_id: str | None, model: str | None = None, version: str | None = None) -> None:
        self.request_id = request_id
        self.model = model
        self.version = version


def test_the_context_fills_what_the_record_does_not_say() -> None:
    flt = logs.ContextFilter()
    token = logs.CONTEXT.set(_Ctx("rid", "iris", "3"))
    trace = logs.TRACE_ID.set("ab" * 16)
    try:
        rec = record("x")
        assert flt.filter(rec)
        assert (rec.request_id, rec.model, rec.version, rec.trace_id) == ("rid", "iris", "3", "ab" * 16)
        own = record("x", model="other", trace_id="cd" * 16)
        flt.filter(own)
        assert own.model == "other" and own.trace_id == "cd" * 16 and own.request_id == "rid"
    finally:
        logs.TRACE_ID.reset(trace)
        logs.CONTEXT.reset(token)
    outside = record("x")
    flt.filter(outside)
    assert "request_id" not in outside.__dict__


def test_auto_is_text_on_a_terminal_json_otherwise() -> None:
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    assert logs.resolve_format("auto", Tty()) == "text"
    assert logs.resolve_format("auto", io.StringIO()) == "json"
    assert logs.resolve_format("text", io.StringIO()) == "text"
    assert logs.resolve_format("json", Tty()) == "json"


def test_settings_and_flag() -> None:
    from modelapi.cli import _settings, build_parser

    assert Settings().log_format == "auto"
    assert _settings(build_parser().parse_args(["serve", "--log-format", "json"]), []).log_format == "json"
    with pytest.raises(SystemExit):
        build_parser().parse_args(["serve", "--log-format", "yaml"])
    assert build_parser().parse_args(["worker", "--log-format", "text"]).log_format == "text"


def test_configure_routes_uvicorns_loggers_through_one_handler() -> None:
    root = logging.getLogger()
    before = list(root.handlers), root.level
    logging.getLogger("uvicorn.error").addHandler(logging.NullHandler())
    logging.getLogger("uvicorn.access").propagate = False
    stream = io.StringIO()
    try:
        first = logs.configure(Settings(log_format="json"), stream)
        second = logs.configure(Settings(log_format="json", log_level="debug"), stream)
        assert first not in root.handlers and second in root.handlers  # a second call replaces the first
        assert root.level == logging.DEBUG
        logging.getLogger("uvicorn.error").warning('uvicorn says "hi"')
        logging.getLogger("modelapi").info("ours")
        lines = [json.loads(line) for line in stream.getvalue().splitlines()]
        assert [(x["logger"], x["message"]) for x in lines] == [
            ("uvicorn.error", 'uvicorn says "hi"'),
            ("modelapi", "ours"),
        ]
        assert not logging.getLogger("uvicorn.error").handlers and logging.getLogger("uvicorn.access").propagate
    finally:
        for handler in list(root.handlers):
            if handler not in before[0]:
                root.removeHandler(handler)
        root.setLevel(before[1])


# rejections ------------------------------------------------------------------------------------------------
def reporter() -> tuple[RejectionReporter, Collect, Clock]:
    logger = logging.getLogger("modelapi.test.rejections")
    logger.handlers = []
    logger.propagate = False
    logger.setLevel(logging.INFO)
    sink = Collect()
    logger.addHandler(sink)
    clock = Clock(100.0)
    return RejectionReporter(logger, interval_s=1.0, clock=clock), sink, clock


def test_refusals_are_reasons_and_server_errors_are_not() -> None:
    assert reason_for(Overloaded("x")) == "overloaded"
    assert reason_for(EarlyRetry("x")) == "early_retry"
    assert reason_for(TooManyRequests("x")) == "rate_limited"
    assert reason_for(InferenceTimeout("x")) == "timeout"
    assert reason_for(PayloadTooLarge("x")) == "body_size"
    assert reason_for(ModelNotReady("x")) == "unavailable"
    assert reason_for(InferenceError("x")) is None


def test_a_burst_of_refusals_is_one_warning_a_second_per_reason() -> None:
    rep, sink, clock = reporter()
    rep.refused("overloaded", 503, "iris", "model 'iris' already has 512 requests in flight")
    assert len(sink.records) == 1 and sink.records[0].getMessage().startswith("model 'iris': a request refused")
    for _ in range(1233):
        clock.now += 0.0005
        rep.refused("overloaded", 503, "iris", "model 'iris' already has 512 requests in flight")
    rep.refused("rate_limited", 429, None, "over its rate limit")  # another reason: its own line
    assert len(sink.records) == 2
    clock.now = 101.0
    rep.refused("overloaded", 503, "iris", "model 'iris' already has 512 requests in flight")
    assert len(sink.records) == 3
    line = sink.records[2]
    assert line.levelno == logging.WARNING
    assert line.getMessage() == (
        "model 'iris': 1,234 requests refused in the last 1.0 s (503 overloaded); "
        "the last: model 'iris' already has 512 requests in flight"
    )
    assert (line.reason, line.status, line.refused, line.model) == ("overloaded", 503, 1234, "iris")  # type: ignore[attr-defined]
    rep.flush()
    assert len(sink.records) == 3  # nothing left to say


def test_the_tail_of_a_burst_is_written_when_its_second_ends() -> None:
    rep, sink, _ = reporter()
    rep.clock = __import__("time").monotonic
    rep.interval_s = 0.2

    async def burst() -> None:
        for _ in range(50):
            rep.refused("timeout", 504, "m", "took longer than 60 s")
        await asyncio.sleep(0.35)

    asyncio.run(burst())
    assert [r.refused for r in sink.records] == [1, 49]  # type: ignore[attr-defined]
    assert "request_id" not in sink.records[1].__dict__


def test_a_silenced_logger_costs_no_counting() -> None:
    rep, sink, _ = reporter()
    rep.logger.setLevel(logging.ERROR)
    rep.refused("overloaded", 503, "iris", "x")
    rep.flush()
    assert sink.records == []


def test_the_warning_says_how_many_of_its_refusals_wrote_no_access_line() -> None:
    rep, sink, clock = reporter()
    rep.refused("overloaded", 503, "iris", "full")  # written at once, with its access line
    for i in range(1233):
        clock.now += 0.0005
        rep.refused("overloaded", 503, "iris", "full", unlogged=i % 3 != 0)  # 411 with a line, 822 without
    rep.refused("overloaded", 503, "other", "full", unlogged=True)  # another model: its own count
    clock.now = 101.0
    rep.refused("overloaded", 503, "iris", "full", unlogged=True)
    first, alone, line = sink.records
    assert first.getMessage() == "model 'iris': a request refused (503 overloaded): full"
    assert first.unlogged == 0  # type: ignore[attr-defined]
    assert alone.getMessage() == (
        "model 'other': a request refused (503 overloaded), without an access line (access_log_refusals_per_s): full"
    )
    assert alone.unlogged == 1  # type: ignore[attr-defined]
    assert line.getMessage() == (
        "model 'iris': 1,234 requests refused in the last 1.0 s (503 overloaded); 823 of them without an access "
        "line (access_log_refusals_per_s); the last: full"
    )
    assert (line.refused, line.unlogged) == (1234, 823)  # type: ignore[attr-defined]
    assert json_line(line)["unlogged"] == 823 and json_line(first)["unlogged"] == 0


def test_refusals_that_wrote_no_access_line_are_counted_exactly_across_lines() -> None:
    """Each count is written once, in the line of the interval it came in, by the next refusal, the timer or
    flush(): none is lost or counted twice."""
    rep, sink, clock = reporter()
    sent = 0
    for step in range(5000):
        clock.now += 0.001 * (1 + step % 7)
        rep.refused("overloaded", 503, None, "x", unlogged=step % 5 != 0)
        sent += step % 5 != 0
    rep.flush()
    rep.flush()  # nothing left: no line
    assert sum(r.refused for r in sink.records) == 5000  # type: ignore[attr-defined]
    assert sum(r.unlogged for r in sink.records) == sent == 4000  # type: ignore[attr-defined]
    assert len(sink.records) > 10


def test_a_line_without_refusals_left_unlogged_reads_as_before() -> None:
    rep, sink, clock = reporter()
    for _ in range(3):
        rep.refused("rate_limited", 429, None, "over its rate limit")
    clock.now += 1
    rep.flush()
    assert [r.getMessage() for r in sink.records] == [
        "a request refused (429 rate_limited): over its rate limit",
        "2 requests refused in the last 1.0 s (429 rate_limited); the last: over its rate limit",
    ]
    assert [r.unlogged for r in sink.records] == [0, 0]  # type: ignore[attr-defined]
