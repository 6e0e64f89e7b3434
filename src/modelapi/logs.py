"""Log lines as text or JSON, one handler for modelapi's loggers and uvicorn's (docs/observability.md#logs).

``configure(settings)`` replaces ``logging.basicConfig`` in ``modelapi serve`` and ``modelapi worker``: one
``StreamHandler`` on stderr, on the root logger, with ``TextFormatter`` or ``JsonFormatter``
(``settings.log_format``: ``auto`` is text on a terminal, JSON otherwise). uvicorn's loggers lose any handler
of their own and propagate to it, so they come out in the same format. That handler (``LogHandler``) can also
write an INFO line without making its record (``write_access``), the same bytes its formatter would write: the
HTTP access log does when the record would reach that handler alone (http/access.py).

A JSON line is one object encoded by orjson: a quote, a newline or a control character in a message stays
inside its string. Keys: ``time`` (RFC 3339, UTC, milliseconds), ``level``, ``logger``, ``message``; when
known ``request_id``, ``trace_id``, ``model``, ``version``; ``exception`` (the formatted traceback) when the
record has one; and any ``extra=`` fields the caller passed (the access log's ``method``, ``path``, ...).

Where the request id, model and version come from: a record's own attribute (``extra={"model": ...}``) wins;
else ``CONTEXT``, a context variable that a front end sets for the request it serves (the HTTP layer's
request-context middleware does; the core never touches it). ``trace_id`` is read the same way from the
record, else ``TRACE_ID``, the hook for tracing. Every line, in both formats, goes through ``redact`` last, so
an API key's secret never reaches the log whatever a message carries.
"""

from __future__ import annotations

import contextvars
import json
import logging
import sys
import time
from collections.abc import Callable
from typing import Any, Protocol, TextIO

import orjson

from .security.keys import redact

#: the default text format: what ``modelapi`` always printed
TEXT_FORMAT = "%(levelname)s:     %(name)s: %(message)s"
#: uvicorn's loggers, which must not keep handlers of their own
UVICORN_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access", "uvicorn.asgi")


class LogContext(Protocol):
    """What a front end knows about the request it is serving; ``None`` where it does not know."""

    @property
    def request_id(self) -> str | None: ...

    @property
    def model(self) -> str | None: ...

    @property
    def version(self) -> str | None: ...


#: the request being served in this context (set by the HTTP layer's request-context middleware)
CONTEXT: contextvars.ContextVar[LogContext | None] = contextvars.ContextVar("modelapi_log_context", default=None)
#: the current trace id (32 hex digits), for tracing to set; a record's own ``trace_id`` wins
TRACE_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar("modelapi_trace_id", default=None)


class ContextFilter(logging.Filter):
    """Copies the request id, model, version and trace id of the current context onto each record."""

    def filter(self, record: logging.LogRecord) -> bool:
        fields = record.__dict__
        ctx = CONTEXT.get()
        if ctx is not None:
            if fields.get("request_id") is None:
                record.request_id = ctx.request_id
            if fields.get("model") is None:
                record.model = ctx.model
            if fields.get("version") is None:
                record.version = ctx.version
        if fields.get("trace_id") is None:
            trace = TRACE_ID.get()
            if trace is not None:
                record.trace_id = trace
        return True


#: attributes every LogRecord has: not ``extra=`` fields (``color_message`` is uvicorn's coloured duplicate)
_STANDARD = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {
    "message",
    "asctime",
    "color_message",
    "taskName",
    "request_id",
    "trace_id",
    "model",
    "version",
}
_KNOWN = ("request_id", "trace_id", "model", "version")

_second: tuple[int, str] = (-1, "")


def rfc3339(created: float) -> str:
    """``created`` (Unix time) as ``2024-05-01T12:34:56.789Z``."""
    global _second
    whole = int(created)
    cached, text = _second
    if cached != whole:
        text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole))
        _second = (whole, text)  # one tuple: a thread that reads it sees a matching pair
    return f"{text}.{int((created - whole) * 1000):03d}Z"


def _default(obj: Any) -> Any:
    return str(obj)


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line. ``ascii_only``: escape everything outside ASCII (for a
    stream whose encoding is not UTF-8)."""

    def __init__(self, *, ascii_only: bool = False) -> None:
        super().__init__()
        self.ascii_only = ascii_only

    def format(self, record: logging.LogRecord) -> str:
        fields = record.__dict__
        out: dict[str, Any] = {
            "time": rfc3339(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key in _KNOWN:
            value = fields.get(key)
            if value is not None:
                out[key] = value
        for key, value in fields.items():
            if key not in _STANDARD and not key.startswith("_"):
                out[key] = value
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            out["exception"] = record.exc_text
        if record.stack_info:
            out["stack"] = self.formatStack(record.stack_info)
        return _encode(out, self.ascii_only)


def _encode(out: dict[str, Any], ascii_only: bool) -> str:
    """The JSON line for ``out``, keys redacted."""
    if ascii_only:
        line = json.dumps(out, default=_default, ensure_ascii=True)
    else:
        line = orjson.dumps(out, default=_default, option=orjson.OPT_NON_STR_KEYS).decode()
    return redact(line) if "mk_" in line else line


class TextFormatter(logging.Formatter):
    """``LEVEL:     logger: message`` (and the traceback), keys redacted."""

    def __init__(self, fmt: str = TEXT_FORMAT) -> None:
        super().__init__(fmt)

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        return redact(line) if "mk_" in line else line


def resolve_format(log_format: str, stream: TextIO) -> str:
    """``text`` or ``json``: ``auto`` is text when ``stream`` is a terminal."""
    if log_format != "auto":
        return log_format
    try:
        return "text" if stream.isatty() else "json"
    except (AttributeError, ValueError):
        return "json"


class LogHandler(logging.StreamHandler[TextIO]):
    """The handler ``make_handler`` makes: a ``StreamHandler`` with its formatter and ``ContextFilter``, that can
    also write an INFO line without a ``LogRecord`` (``write_access``) while it is still as it was made."""

    def __init__(self, stream: TextIO, formatter: JsonFormatter | TextFormatter) -> None:
        super().__init__(stream)
        self.setFormatter(formatter)
        self._context = ContextFilter()
        self.addFilter(self._context)
        # the formatters write_access knows to the byte: these two exactly, the text one in its own format
        plain = type(formatter) is JsonFormatter or (type(formatter) is TextFormatter and formatter._fmt == TEXT_FORMAT)
        self._own = formatter if plain else None
        self._modelapi = True  # so configure() replaces its own, and only it

    def untouched(self) -> bool:
        """Its own formatter and filter and nothing else, at a level that lets INFO through: what it writes for
        an INFO record is then exactly what ``write_access`` writes."""
        filters = self.filters
        return (
            self._own is not None
            and self.formatter is self._own
            and len(filters) == 1
            and filters[0] is self._context
            and self.level <= logging.INFO
        )

    def write_access(
        self,
        name: str,
        created: float,
        msg: str,
        args: tuple[Any, ...],
        fields: dict[str, Any],
        record: Callable[[], logging.LogRecord],
    ) -> None:
        """Write the line this handler writes for an INFO record of logger ``name``, made at ``created``, with
        ``msg % args`` for its message and the ``extra=`` fields ``fields``, without that record: the same bytes
        in one write, under the lock, then the flush, as ``Handler.handle`` and ``StreamHandler.emit`` do.

        Only for a handler that is ``untouched()`` and the only one the record would reach; ``args`` is a
        tuple as ``%`` takes it (not one mapping). ``record`` makes the record, only for ``handleError`` if
        the line cannot be written.
        """
        self.acquire()
        try:
            message = msg % args if args else msg
            level = logging.getLevelName(logging.INFO)
            own = self._own
            if isinstance(own, JsonFormatter):
                line = _encode(_access_fields(name, level, created, message, fields), own.ascii_only)
            else:  # what TextFormatter makes of a record without a traceback
                line = TEXT_FORMAT % {"levelname": level, "name": name, "message": message}
                if "mk_" in line:
                    line = redact(line)
            self.stream.write(line + self.terminator)
            self.flush()
        except RecursionError:  # as StreamHandler.emit: see CPython issue 36272
            raise
        except Exception:
            self.handleError(record())
        finally:
            self.release()


def _access_fields(name: str, level: str, created: float, message: str, fields: dict[str, Any]) -> dict[str, Any]:
    """The object ``JsonFormatter`` makes of such a record once ``ContextFilter`` has seen it: the same keys
    in the same order."""
    out: dict[str, Any] = {"time": rfc3339(created), "level": level, "logger": name, "message": message}
    ctx = CONTEXT.get()
    for key in _KNOWN:
        value = fields.get(key)
        if value is None:
            if key == "trace_id":
                value = TRACE_ID.get()
            elif ctx is not None:
                value = getattr(ctx, key)
        if value is not None:
            out[key] = value
    for key, value in fields.items():
        if key not in _STANDARD and not key.startswith("_"):
            out[key] = value
    return out


def make_handler(log_format: str, stream: TextIO | None = None) -> LogHandler:
    """A stream handler (stderr by default) with the formatter for ``log_format`` and the context filter."""
    stream = stream if stream is not None else sys.stderr
    formatter: JsonFormatter | TextFormatter
    if resolve_format(log_format, stream) == "json":
        encoding = (getattr(stream, "encoding", None) or "utf-8").lower().replace("-", "")
        formatter = JsonFormatter(ascii_only=encoding != "utf8")
    else:
        formatter = TextFormatter()
    return LogHandler(stream, formatter)


def configure(settings: Any, stream: TextIO | None = None) -> LogHandler:
    """Send every log record to one handler in ``settings.log_format`` at ``settings.log_level``.

    Replaces a handler an earlier call installed and leaves others (a test's capture handler) alone. uvicorn's
    loggers drop their own handlers and propagate here (pass ``uvicorn.Config(log_config=None)``).
    """
    root = logging.getLogger()
    for old in list(root.handlers):
        if getattr(old, "_modelapi", False):
            root.removeHandler(old)
            old.close()
    handler = make_handler(settings.log_format, stream)
    root.addHandler(handler)
    root.setLevel(settings.log_level.upper())
    logging.captureWarnings(True)  # Python's warnings too, in the same format (py.warnings)
    for name in UVICORN_LOGGERS:
        logger = logging.getLogger(name)
        logger.handlers = []
        logger.propagate = True
    return handler
