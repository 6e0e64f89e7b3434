"""The HTTP access line (``modelapi.access``): one line per request, written when its response has ended.

When the only handler the line would reach is modelapi's own as ``logs.make_handler`` made it (the one
``logs.configure`` puts on the root logger), with no filter on the access logger and the default record
factory, that handler writes the line itself (``LogHandler.write_access``): the bytes its formatter would
write for the record, without making the record or passing it through ``logging``. Anything else on the way (a
test's capture handler, a user's handler or filter, another record factory) gets the record as before.

That record is the one ``ACCESS_LOG.info`` would make, handed straight to the logger's handlers after the
caller's level check, without two costs that are the same on every request: ``findCaller``'s walk up the stack
(it names this module's function anyway) and ``LogRecord.__init__``'s per-record work on fields that never
change in one thread of one process (the file and module names from the path, the thread's and process's
names; the asyncio task's name, ``taskName`` from Python 3.12 on, is looked up per record as there). Those come
from a prototype, a record made by ``Logger.makeRecord`` once per process and thread (and
again if ``logging.setLogRecordFactory`` installs another factory, whose records are then made by it every
time); each line copies it and sets what changes: the time, the arguments and the ``extra`` fields. Measured:
docs/benchmarks-log.md (the fast path).
"""

from __future__ import annotations

import logging
import os
import random
import re
import sys
import threading
import time
from typing import Any
from urllib.parse import quote, unquote

from starlette.types import Scope

from ..logs import LogHandler
from ..security.keys import redact

#: one line per request, written when the response ends (method, path, status, duration, bytes, client)
ACCESS_LOG = logging.getLogger("modelapi.access")
_NAME = ACCESS_LOG.name
_FORMAT = '%s - "%s %s HTTP/%s" %d %d B %.1f ms [%s]'
#: LogRecord reads the clock this way from Python 3.13 on (time_ns), as time.time() before
_NS_CLOCK = sys.version_info >= (3, 13)
_CLIENT_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")
#: request ids: not secrets, only unique, so no system call per request; a generator of our own, so a model that
#: seeds ``random`` for reproducibility cannot make ids repeat, reseeded in every forked worker
_IDS = random.Random()  # noqa: S311 (ids are not secrets: nothing trusts them)
os.register_at_fork(after_in_child=_IDS.seed)


class _Prototype:
    """The constant fields of an access record, for the process, thread and record factory that made them."""

    __slots__ = ("fields", "owner")

    def __init__(self) -> None:
        self.owner: tuple[int, int] | None = None
        self.fields: dict[str, Any] = {}

    def record(self, args: tuple[Any, ...], extra: dict[str, Any]) -> logging.LogRecord:
        if logging.getLogRecordFactory() is not logging.LogRecord:  # someone's own records: theirs to make
            return ACCESS_LOG.makeRecord(
                ACCESS_LOG.name, logging.INFO, __file__, _LINENO, _FORMAT, args, None, _FUNC, extra
            )
        owner = (os.getpid(), threading.get_ident())
        if owner != self.owner:
            made = ACCESS_LOG.makeRecord(ACCESS_LOG.name, logging.INFO, __file__, _LINENO, _FORMAT, (), None, _FUNC)
            self.fields = dict(made.__dict__)
            self.owner = owner
        record: logging.LogRecord = logging.LogRecord.__new__(logging.LogRecord)
        fields = record.__dict__
        fields.update(self.fields)
        created, fields["msecs"] = _now()
        fields["created"] = created
        fields["relativeCreated"] = (created - logging._startTime) * 1000  # type: ignore[attr-defined]
        if "taskName" in fields:  # Python 3.12+: the task logging, per record as LogRecord.__init__ finds it
            fields["taskName"] = _task_name()
        fields["args"] = args
        fields.update(extra)
        return record


def _now() -> tuple[float, float]:
    """A record's ``created`` and ``msecs`` for now, exactly as ``LogRecord.__init__`` computes them."""
    if _NS_CLOCK:
        ns = time.time_ns()
        return ns / 1e9, (ns % 1_000_000_000) // 1_000_000 + 0.0
    created = time.time()
    return created, int((created - int(created)) * 1000) + 0.0


if _NS_CLOCK:

    def _created() -> float:
        """``_now()``'s ``created`` alone: the time of a line written without its record."""
        return time.time_ns() / 1e9

else:  # time.time itself: no Python call, and no ``msecs`` computed for a line that has no record
    _created = time.time


def _own_handler() -> LogHandler | None:
    """The one handler an access record would reach, if it is modelapi's own as ``logs.make_handler`` made it
    and the record would be the default factory's: it can then write the line itself (``write_access``).

    The walk is ``Logger.handle``'s and ``callHandlers``': the logger's own filters and ``disabled``, then the
    handlers of each logger up the chain while it propagates. The logger's level (and ``logging.disable``)
    the caller has checked, as it does before ``ACCESS_LOG.handle``.
    """
    # getLogRecordFactory()'s answer, read as it reads it: one call less a request
    if logging._logRecordFactory is not logging.LogRecord:  # type: ignore[attr-defined]
        return None
    logger: logging.Logger | None = ACCESS_LOG
    if ACCESS_LOG.filters or ACCESS_LOG.disabled:
        return None
    found: logging.Handler | None = None
    while logger is not None:
        handlers = logger.handlers
        if handlers:
            if found is not None or len(handlers) > 1:
                return None
            found = handlers[0]
        logger = logger.parent if logger.propagate else None
    if type(found) is LogHandler and found.untouched():
        return found
    return None


def _task_name() -> str | None:
    """The current asyncio task's name, as ``LogRecord.__init__`` sets ``taskName`` (not the prototype's task)."""
    if not getattr(logging, "logAsyncioTasks", False):
        return None
    asyncio = sys.modules.get("asyncio")
    if asyncio is None:
        return None
    try:
        name: str = asyncio.current_task().get_name()
    except Exception:
        return None
    return name


_PROTOTYPE = _Prototype()


def scan_headers(scope: Scope) -> tuple[str, int | None]:
    """The request id (the client's ``X-Request-ID`` if well-formed, else a new one) and ``Content-Length``."""
    rid: str | None = None
    length: int | None = None
    seen_length = False
    for key, value in scope["headers"]:
        if key == b"content-length" and not seen_length:  # the first one, as uvicorn reads it
            seen_length = True
            try:
                length = int(value)
            except ValueError:
                length = None
        elif key == b"x-request-id" and rid is None:
            text: str = value.decode("latin-1")
            rid = text if _CLIENT_ID.fullmatch(text) else ""
    return rid or new_request_id(), length


def new_request_id() -> str:
    """A new request id: 32 hex digits, as f"{n:032x}" writes them, without parsing a format spec each time."""
    return _IDS.getrandbits(128).to_bytes(16, "big").hex()


def well_formed_id(text: str) -> bool:
    """Whether a client's ``X-Request-ID`` is taken as the request's id (else a new one is made)."""
    return _CLIENT_ID.fullmatch(text) is not None


def access_line(scope: Scope, rid: str, status: int, sent: int, seconds: float) -> None:
    """One access-log line; the query string's keys redacted (a key in a URL is refused, never logged)."""
    path = scope.get("path", "")
    query = scope.get("query_string", b"")
    if query:
        text = query.decode("latin-1")
        if "%" in text and "mk" in unquote(text):  # a percent-encoded key is still a key
            text = quote(redact(unquote(text)), safe="=&+,;:/<>")
        path = f"{path}?{text}"
    if "mk_" in path:
        path = redact(path)
    client = scope.get("client")
    address = f"{client[0]}:{client[1]}" if client else "-"
    method = scope.get("method", "")
    ms = round(seconds * 1000, 3)
    args = (address, method, path, scope.get("http_version", "1.1"), status, sent, ms, rid)
    extra = {
        "method": method,
        "path": path,
        "status": status,
        "duration_ms": ms,
        "bytes": sent,
        "client": address,
        "request_id": rid,
    }
    handler = _own_handler()
    if handler is not None:
        handler.write_access(_NAME, _created(), _FORMAT, args, extra, lambda: _PROTOTYPE.record(args, extra))
    else:
        ACCESS_LOG.handle(_PROTOTYPE.record(args, extra))


_LINENO = access_line.__code__.co_firstlineno
_FUNC = "access_line"
