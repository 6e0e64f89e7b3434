"""Log capture for tests: ``Collect`` keeps the records a logger hands it, ``Stream`` the calls a handler makes
on its stream, ``only_handlers`` gives the root logger just the handlers a test names (not pytest's own)."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from contextlib import contextmanager


class Collect(logging.Handler):
    """Keeps every record it is handed."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


class Stream(io.StringIO):
    """A UTF-8 text stream that notes each write (its text) and each flush (``FLUSH``), in order."""

    FLUSH = "<flush>"

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []

    def write(self, s: str) -> int:
        self.calls.append(s)
        return super().write(s)

    def flush(self) -> None:
        self.calls.append(self.FLUSH)
        super().flush()


class Latin1Stream(Stream):
    """A stream whose encoding is not UTF-8 (the JSON formatter then escapes everything outside ASCII)."""

    encoding = "latin-1"


@contextmanager
def only_handlers(*handlers: logging.Handler, level: int = logging.INFO) -> Iterator[None]:
    """The root logger with these handlers and no other (pytest's capture handlers are put back after)."""
    root = logging.getLogger()
    saved, saved_level = root.handlers, root.level
    root.handlers = list(handlers)
    root.setLevel(level)
    try:
        yield
    finally:
        root.handlers = saved
        root.setLevel(saved_level)
