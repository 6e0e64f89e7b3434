"""Log lines as text or JSON, one handler for modelapi's loggers and uvicorn's (docs/observability.md#logs).

``configure(settings)`` replaces ``logging.basicConfig`` in ``modelapi serve`` and ``modelapi worker``: one
``StreamHandler`` on stderr, on the root logger, with ``TextFormatter`` or ``JsonFormatter``
(``settings.log_format``: ``auto`` is text on a terminal, JSON otherwise). uvicorn's loggers lose any handler
of their own and propagate to it, so they come out in the same format. That handler (``LogHandler``) can also
write an INFO line without making its record (``write_access``), the same bytes its formatter would write: the
HTTP access log does when the record would reach that handler alone (http/access.py).

Buffered access lines (``settings.access_log_flush_ms``, as nginx's ``access_log ... buffer= flush=``): with a
delay above 0, a line ``write_access`` makes on an event loop waits in the handler, whole, instead of costing
a write system call of its own. What waits is written, in one write of whole lines, when any other record goes
through the handler (before that record's line: the log keeps its order), when it reaches ``PIPE_BUF`` bytes,
when the delay after the first waiting line has passed (a timer on that loop), and on ``flush()`` and
``close()`` (``logging.shutdown`` at exit, the server's shutdown, a worker's exit). Off a running loop (a
thread, a script) a line is written at once. A kill -9 loses at most the last delay's access lines.

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

import asyncio
import contextlib
import contextvars
import json
import logging
import os
import sys
import time
import weakref
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
_INFO = logging.INFO
#: orjson's options for a JSON line that ends with its newline (``_encode``'s, and the newline)
_LINE = orjson.OPT_NON_STR_KEYS | orjson.OPT_APPEND_NEWLINE
#: logging's own level-to-name table (what getLevelName reads first; addLevelName changes it in place)
_LEVEL_TO_NAME: dict[int, str] = logging._levelToName
#: most bytes in one write of buffered lines: POSIX writes up to PIPE_BUF bytes to a pipe in one piece, so the
#: lines of workers that share one stderr pipe never interleave within a line
PIPE_BUF = 4096

_second: tuple[int, str] = (-1, "")
#: ``.000Z`` to ``.999Z``: the milliseconds of a time looked up, not formatted (a format call on every line)
_MILLIS = tuple(f".{ms:03d}Z" for ms in range(1000))


def rfc3339(created: float) -> str:
    """``created`` (Unix time) as ``2024-05-01T12:34:56.789Z``."""
    global _second
    whole = int(created)
    cached, text = _second
    if cached != whole:
        text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole))
        _second = (whole, text)  # one tuple: a thread that reads it sees a matching pair
    return text + _MILLIS[int((created - whole) * 1000)]


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

    def __init__(self, stream: TextIO, formatter: JsonFormatter | TextFormatter, *, flush_delay: float = 0.0) -> None:
        super().__init__(stream)
        self.setFormatter(formatter)
        self._context = ContextFilter()
        self.addFilter(self._context)
        # the formatters write_access knows to the byte: these two exactly, the text one in its own format
        plain = type(formatter) is JsonFormatter or (type(formatter) is TextFormatter and formatter._fmt == TEXT_FORMAT)
        self._own = formatter if plain else None
        self._modelapi = True  # so configure() replaces its own, and only it
        #: seconds an access line written on an event loop may wait to share a write (0: written at once)
        self.flush_delay = flush_delay
        self._pending: list[str] = []  # whole lines, each with its newline, in order
        self._pending_bytes = 0
        # the loop whose timer will write what waits (None: no timer armed); the generation tells that timer
        # from one armed before it, which still writes what waits when it fires but no longer stands for "armed"
        self._timer_loop: asyncio.AbstractEventLoop | None = None
        self._generation = 0
        _HANDLERS.add(self)

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
        in one write, under the lock, then the flush, as ``Handler.handle`` and ``StreamHandler.emit`` do; or,
        with a ``flush_delay`` and on a running event loop, kept to be written with others (``_buffer``).

        Only for a handler that is ``untouched()`` and the only one the record would reach; ``args`` is a
        tuple as ``%`` takes it (not one mapping). ``record`` makes the record, only for ``handleError`` if
        the line cannot be written.
        """
        # Handler.acquire and release and getLevelName, inline (this handler's own, type checked by the caller):
        # three calls less a request
        lock = self.lock
        if lock:
            lock.acquire()
        try:
            message = msg % args if args else msg
            level = _LEVEL_TO_NAME.get(_INFO) or logging.getLevelName(_INFO)
            own = self._own
            if isinstance(own, JsonFormatter):
                out = _access_fields(name, level, created, message, fields)
                if own.ascii_only or self.terminator != "\n":
                    line = _encode(out, own.ascii_only) + self.terminator
                else:  # _encode's line with its newline from orjson: one copy of the line less
                    line = orjson.dumps(out, default=_default, option=_LINE).decode()
                    if "mk_" in line:
                        line = redact(line)  # a key never ends with the newline: the same as before it
            else:  # what TextFormatter makes of a record without a traceback: TEXT_FORMAT ends in the message
                prefix = _TEXT_PREFIXES.get((level, name))
                if prefix is None:
                    prefix = TEXT_FORMAT % {"levelname": level, "name": name, "message": ""}
                    _TEXT_PREFIXES[(level, name)] = prefix
                line = prefix + message
                if "mk_" in line:
                    line = redact(line)
                line += self.terminator
            if self.flush_delay > 0.0:
                loop = _running_loop()
                if loop is not None:
                    self._buffer(line, loop)
                    return
            if self._pending:
                self._write_pending()
            self.stream.write(line)
            self.flush()
        except RecursionError:  # as StreamHandler.emit: see CPython issue 36272
            raise
        except Exception:
            self.handleError(record())
        finally:
            if lock:
                lock.release()

    # buffered access lines (under the lock) ---------------------------------------------------------------
    def _buffer(self, line: str, loop: asyncio.AbstractEventLoop) -> None:
        """Keep ``line`` to be written with the lines around it: at once when the waiting bytes reach
        ``PIPE_BUF`` (what waited before, first, when this line would take them over it: each write is whole
        lines of at most PIPE_BUF bytes, or one longer line alone), else by a timer on ``loop``."""
        size = len(line) if line.isascii() else self._bytes(line)
        armed = self._timer_loop
        if armed is not None and armed is not loop:
            # the timer is another loop's (another thread's, or one that has stopped): what waits goes now
            self._timer_loop = armed = None
            if self._pending:
                self._write_pending()
        if self._pending and self._pending_bytes + size > PIPE_BUF:
            self._write_pending()
        self._pending.append(line)
        self._pending_bytes += size
        if self._pending_bytes >= PIPE_BUF:
            self._write_pending()
        elif armed is None:
            self._generation += 1
            loop.call_later(self.flush_delay, self._timer_fired, self._generation)
            self._timer_loop = loop

    def _bytes(self, line: str) -> int:
        """What ``line`` takes on the stream, in its encoding (a character it cannot encode counted at most)."""
        encoding = getattr(self.stream, "encoding", None) or "utf-8"
        try:
            return len(line.encode(encoding, getattr(self.stream, "errors", None) or "strict"))
        except (LookupError, UnicodeError):
            return len(line) * 10  # backslashreplace writes a character as \UXXXXXXXX at most

    def _write_pending(self) -> None:
        """Write the waiting lines in one write, then flush (the caller holds the lock): flushed each time, so
        that a stream that is not line-buffered does not join them with the next line into a write over
        PIPE_BUF. They leave the buffer first: a stream that fails does not get them again with every later
        line."""
        pending = self._pending
        text = pending[0] if len(pending) == 1 else "".join(pending)
        self._pending = []
        self._pending_bytes = 0
        self.stream.write(text)
        logging.StreamHandler.flush(self)

    def _write_pending_or_report(self, record: Callable[[], logging.LogRecord]) -> None:
        """``_write_pending``, a failure reported as ``StreamHandler.emit`` reports one (``record()`` names it)."""
        try:
            self._write_pending()
        except RecursionError:  # as StreamHandler.emit: see CPython issue 36272
            raise
        except Exception:
            self.handleError(record())

    def _timer_fired(self, generation: int) -> None:
        self.acquire()
        try:
            if generation == self._generation:
                self._timer_loop = None
            if self._pending:
                self._write_pending_or_report(_lost_lines)
        finally:
            self.release()

    def emit(self, record: logging.LogRecord) -> None:
        """``StreamHandler.emit``, after the access lines that wait: the log keeps the order of its lines."""
        if self._pending:
            self._write_pending_or_report(lambda: record)
        super().emit(record)

    def flush(self) -> None:
        """Write the access lines that wait, then flush the stream."""
        self.acquire()
        try:
            if self._pending:
                self._write_pending()  # and flushes
            else:
                super().flush()
        finally:
            self.release()

    def close(self) -> None:
        """Write the access lines that wait, then close as ``StreamHandler`` does (the stream stays open)."""
        self.acquire()
        try:
            if self._pending:
                self._write_pending_or_report(_lost_lines)
        finally:
            self.release()
            super().close()

    def _forget_pending(self) -> None:
        """In a forked child: the lines that wait are the parent's to write, its timer the parent's loop's."""
        self._pending = []
        self._pending_bytes = 0
        self._timer_loop = None


#: TEXT_FORMAT up to the message, per level name and logger name (write_access's text lines; a few entries)
_TEXT_PREFIXES: dict[tuple[str, str], str] = {}
#: every LogHandler, for the child of a fork (``_forget_pending``)
_HANDLERS: weakref.WeakSet[LogHandler] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for handler in list(_HANDLERS):
        handler._forget_pending()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)

#: the running event loop of this thread, or None (asyncio's own fast check, no exception when there is none)
_running_loop = asyncio._get_running_loop


def _lost_lines() -> logging.LogRecord:
    """The record ``handleError`` is given when waiting access lines cannot be written."""
    return logging.makeLogRecord(
        {"name": "modelapi.access", "levelno": logging.INFO, "levelname": "INFO", "msg": "buffered access lines"}
    )


def flush() -> None:
    """Write what the root logger's handlers hold (the access lines that wait): before a process leaves
    without ``logging.shutdown`` (a forked worker's ``os._exit``)."""
    for handler in list(logging.getLogger().handlers):
        # as logging.shutdown: a stream that is gone has nothing more to say
        with contextlib.suppress(Exception):
            handler.flush()


def _access_fields(name: str, level: str, created: float, message: str, fields: dict[str, Any]) -> dict[str, Any]:
    """The object ``JsonFormatter`` makes of such a record once ``ContextFilter`` has seen it: the same keys
    in the same order."""
    out: dict[str, Any] = {"time": rfc3339(created), "level": level, "logger": name, "message": message}
    # the known keys (_KNOWN), unrolled: the record's own value, else the context's
    ctx = CONTEXT.get()
    get = fields.get
    value = get("request_id")
    if value is None and ctx is not None:
        value = ctx.request_id
    if value is not None:
        out["request_id"] = value
    value = get("trace_id")
    if value is None:
        value = TRACE_ID.get()
    if value is not None:
        out["trace_id"] = value
    value = get("model")
    if value is None and ctx is not None:
        value = ctx.model
    if value is not None:
        out["model"] = value
    value = get("version")
    if value is None and ctx is not None:
        value = ctx.version
    if value is not None:
        out["version"] = value
    keys = tuple(fields)
    plan = _EXTRA_KEYS.get(keys)
    if plan is None:
        extra = tuple(key for key in keys if key not in _STANDARD and not key.startswith("_"))
        # fields whose only keys besides the extra ones are known keys: those are in ``out`` already, with the
        # fields' own values when not None, so one update adds the extra ones in order (a key it sets again
        # keeps its place)
        others = tuple(key for key in keys if key not in extra)
        plan = (extra, others if all(key in _KNOWN for key in others) else None)
        if len(_EXTRA_KEYS) < 64:  # the access line has one set of keys; a caller with many still gets them right
            _EXTRA_KEYS[keys] = plan
    extra, known = plan
    if known is not None:
        for key in known:
            if fields[key] is None:
                break
        else:
            out.update(fields)
            return out
    for key in extra:
        out[key] = fields[key]
    return out


#: per set of fields' keys in order: the ``extra=`` keys (as ``JsonFormatter`` picks them, in order), and the
#: others when all are known keys (else None): the access line's are the same on every request
_EXTRA_KEYS: dict[tuple[str, ...], tuple[tuple[str, ...], tuple[str, ...] | None]] = {}


def make_handler(log_format: str, stream: TextIO | None = None, *, flush_delay: float = 0.0) -> LogHandler:
    """A stream handler (stderr by default) with the formatter for ``log_format`` and the context filter;
    ``flush_delay``: seconds an access line may wait to be written with others (0: at once)."""
    stream = stream if stream is not None else sys.stderr
    formatter: JsonFormatter | TextFormatter
    if resolve_format(log_format, stream) == "json":
        encoding = (getattr(stream, "encoding", None) or "utf-8").lower().replace("-", "")
        formatter = JsonFormatter(ascii_only=encoding != "utf8")
    else:
        formatter = TextFormatter()
    return LogHandler(stream, formatter, flush_delay=flush_delay)


def configure(settings: Any, stream: TextIO | None = None) -> LogHandler:
    """Send every log record to one handler in ``settings.log_format`` at ``settings.log_level``.

    Access lines wait up to ``settings.access_log_flush_ms`` to share a write (``LogHandler._buffer``).
    Replaces a handler an earlier call installed and leaves others (a test's capture handler) alone. uvicorn's
    loggers drop their own handlers and propagate here (pass ``uvicorn.Config(log_config=None)``).
    """
    root = logging.getLogger()
    for old in list(root.handlers):
        if getattr(old, "_modelapi", False):
            root.removeHandler(old)
            old.close()
    handler = make_handler(settings.log_format, stream, flush_delay=settings.access_log_flush_ms / 1000)
    root.addHandler(handler)
    root.setLevel(settings.log_level.upper())
    logging.captureWarnings(True)  # Python's warnings too, in the same format (py.warnings)
    for name in UVICORN_LOGGERS:
        logger = logging.getLogger(name)
        logger.handlers = []
        logger.propagate = True
    return handler
