"""Buffered access lines in modelapi's log handler (``LogHandler(flush_delay=...)``): lines written on an event
loop wait and share one write of whole lines; any other record, the PIPE_BUF bound, the timer, flush() and
close() write them, in order; off a loop (a thread, a script) each line is written at once."""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from typing import Any

import pytest

from helpers.logs import Stream
from modelapi import logs
from modelapi.cli import _settings, build_parser
from modelapi.settings import Settings

DELAY = 0.05


def handler(delay: float = DELAY, log_format: str = "text", stream: Stream | None = None) -> logs.LogHandler:
    return logs.make_handler(log_format, stream if stream is not None else Stream(), flush_delay=delay)


def access(h: logs.LogHandler, text: str, fields: dict[str, Any] | None = None) -> None:
    h.write_access("modelapi.access", time.time(), "%s", (text,), fields or {}, _no_record)


def _no_record() -> logging.LogRecord:
    raise AssertionError("a record was made")


def line(text: str) -> str:
    """The text format's access line for ``text``."""
    return f"INFO:     modelapi.access: {text}\n"


def writes(stream: Stream) -> list[str]:
    return [c for c in stream.calls if c != Stream.FLUSH]


def test_on_a_loop_lines_wait_and_share_one_write_then_the_flush() -> None:
    stream = Stream()
    h = handler(stream=stream)

    async def main() -> list[str]:
        for i in range(3):
            access(h, f"r{i}")
        held = list(stream.calls)
        await asyncio.sleep(DELAY * 3)
        return held

    assert asyncio.run(main()) == []  # nothing written while they wait
    assert stream.calls == [line("r0") + line("r1") + line("r2"), Stream.FLUSH]


def test_the_timer_writes_within_the_delay_of_the_first_line() -> None:
    stream = Stream()
    h = handler(0.2, stream=stream)

    async def main() -> float:
        begun = time.monotonic()
        access(h, "first")
        while not stream.calls:
            await asyncio.sleep(0.005)
        return time.monotonic() - begun

    took = asyncio.run(main())
    assert 0.2 <= took < 0.2 + 0.5, took  # the timer, not before (slack for a busy machine after)
    assert writes(stream) == [line("first")]


def test_another_record_writes_the_waiting_lines_first() -> None:
    """An error logged after a request's line comes after it in the log, and at once."""
    stream = Stream()
    h = handler(stream=stream)

    async def main() -> None:
        access(h, "a")
        access(h, "b")
        h.handle(logging.LogRecord("modelapi.x", logging.ERROR, __file__, 1, "it failed", (), None))
        access(h, "c")
        assert stream.getvalue() == line("a") + line("b") + "ERROR:     modelapi.x: it failed\n"
        await asyncio.sleep(DELAY * 3)

    asyncio.run(main())
    assert stream.getvalue() == line("a") + line("b") + "ERROR:     modelapi.x: it failed\n" + line("c")


def test_writes_are_whole_lines_of_at_most_pipe_buf_bytes() -> None:
    stream = Stream()
    h = handler(10.0, stream=stream)  # the timer never fires here: the bound alone writes
    texts = [f"request {i:04d} " + "x" * (50 + i % 170) for i in range(200)]
    long = "y" * (logs.PIPE_BUF + 500)

    async def main() -> None:
        for text in texts[:100]:
            access(h, text)
        access(h, long)
        for text in texts[100:]:
            access(h, "mod\u00e8le-\u6a21\u578b " + text)  # bytes, not characters, count
        h.flush()

    asyncio.run(main())
    chunks = writes(stream)
    assert len(chunks) > 5
    assert "".join(chunks) == "".join(
        [line(t) for t in texts[:100]] + [line(long)] + [line("mod\u00e8le-\u6a21\u578b " + t) for t in texts[100:]]
    )
    for chunk in chunks:
        assert chunk.endswith("\n")  # whole lines only
        if chunk != line(long):
            assert len(chunk.encode()) <= logs.PIPE_BUF
    assert line(long) in chunks  # the long line alone, as before
    # each write flushed before the next: a stream that is not line-buffered does not join two into one over
    # PIPE_BUF
    calls = stream.calls
    assert all(calls[i + 1] == Stream.FLUSH for i, c in enumerate(calls) if c != Stream.FLUSH)
    # each write but those before the long line and at the flush filled most of its PIPE_BUF (less than one
    # more line was left): the bound, not the line count, decides
    at = chunks.index(line(long))
    assert all(len(c.encode()) > logs.PIPE_BUF - 300 for c in chunks[: at - 1] + chunks[at + 1 : -1])


def test_lines_written_after_the_bound_still_get_the_timer() -> None:
    stream = Stream()
    h = handler(stream=stream)
    big = "z" * 3000

    async def main() -> None:
        access(h, big)
        access(h, big)  # over the bound with the first: the first is written now, this one waits
        assert writes(stream) == [line(big)]
        await asyncio.sleep(DELAY * 3)

    asyncio.run(main())
    assert writes(stream) == [line(big), line(big)]


def test_flush_and_close_write_what_waits() -> None:
    stream = Stream()
    h = handler(10.0, stream=stream)

    async def main() -> None:
        access(h, "one")
        h.flush()
        assert stream.calls == [line("one"), Stream.FLUSH]
        access(h, "two")
        h.close()  # configure() replacing it, logging.shutdown at exit

    asyncio.run(main())
    assert writes(stream) == [line("one"), line("two")]


def test_logs_flush_writes_what_the_root_handler_holds() -> None:
    stream = Stream()
    h = handler(10.0, stream=stream)
    root = logging.getLogger()
    root.addHandler(h)
    try:

        async def main() -> None:
            access(h, "waiting")
            logs.flush()

        asyncio.run(main())
    finally:
        root.removeHandler(h)
    assert writes(stream) == [line("waiting")]


def test_off_a_loop_or_with_no_delay_each_line_is_written_at_once() -> None:
    stream = Stream()
    access(handler(stream=stream), "no loop")
    assert stream.calls == [line("no loop"), Stream.FLUSH]
    stream = Stream()

    async def main() -> None:
        access(handler(0.0, stream=stream), "no delay")

    asyncio.run(main())
    assert stream.calls == [line("no delay"), Stream.FLUSH]


def test_a_thread_without_a_loop_writes_at_once_after_what_waits() -> None:
    stream = Stream()
    h = handler(10.0, stream=stream)

    async def main() -> None:
        access(h, "on the loop")
        thread = threading.Thread(target=access, args=(h, "from a thread"))
        thread.start()
        thread.join()

    asyncio.run(main())
    assert writes(stream) == [line("on the loop"), line("from a thread")]


def test_threads_and_loops_together_lose_and_split_nothing() -> None:
    """Four threads, two on loops of their own and two without: every line once, whole, each write under
    PIPE_BUF; a loop's lines reach the stream once its timer fires, whichever loop armed the last one."""
    stream = Stream()
    h = handler(0.01, stream=stream)
    per_thread = 300

    async def on_loop(name: str) -> None:
        for i in range(per_thread):
            access(h, f"{name}-{i:03d} " + "p" * (i % 97))
            if i % 25 == 0:
                await asyncio.sleep(0.002)
        await asyncio.sleep(0.05)

    def plain(name: str) -> None:
        for i in range(per_thread):
            access(h, f"{name}-{i:03d} " + "p" * (i % 97))

    def looped(name: str) -> None:
        asyncio.run(on_loop(name))

    threads = [threading.Thread(target=looped, args=(n,)) for n in ("loop1", "loop2")]
    threads += [threading.Thread(target=plain, args=(n,)) for n in ("thread1", "thread2")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    h.flush()
    chunks = writes(stream)
    assert all(c.endswith("\n") and len(c.encode()) <= logs.PIPE_BUF for c in chunks)
    got = "".join(chunks).splitlines()
    assert len(got) == 4 * per_thread
    for name in ("loop1", "loop2", "thread1", "thread2"):
        mine = [x for x in got if x.startswith(f"INFO:     modelapi.access: {name}-")]
        expected = [line(f"{name}-{i:03d} " + "p" * (i % 97)).rstrip("\n") for i in range(per_thread)]
        assert mine == expected  # each thread's lines in its order


def test_a_loop_that_stopped_leaves_its_lines_to_the_next_writer() -> None:
    """The timer's loop is gone (asyncio.run returned): a line from another loop writes what waited at once."""
    stream = Stream()
    h = handler(10.0, stream=stream)

    async def one(text: str) -> None:
        access(h, text)

    asyncio.run(one("first loop"))
    assert writes(stream) == []
    asyncio.run(one("second loop"))
    assert writes(stream) == [line("first loop")]
    h.flush()
    assert writes(stream) == [line("first loop"), line("second loop")]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_does_not_write_its_parents_waiting_lines() -> None:
    read_fd, write_fd = os.pipe()
    stream = os.fdopen(write_fd, "w")
    h = logs.LogHandler(stream, logs.TextFormatter(), flush_delay=10.0)

    async def main() -> None:
        access(h, "the parent's")
        pid = os.fork()
        if pid == 0:  # the child: what it flushes is its own, and it has none
            try:
                h.flush()
            finally:
                os._exit(0)
        os.waitpid(pid, 0)
        h.flush()

    try:
        asyncio.run(main())
        stream.close()
        with os.fdopen(read_fd, "rb") as pipe:
            assert pipe.read().decode() == line("the parent's")
    finally:
        h.close()


def test_json_lines_wait_too() -> None:
    stream = Stream()
    h = handler(log_format="json", stream=stream)

    async def main() -> None:
        access(h, "a", {"status": 200})
        access(h, "b", {"status": 404})
        await asyncio.sleep(DELAY * 3)

    asyncio.run(main())
    (chunk,) = writes(stream)
    assert [x.split('"message":')[1][:3] for x in chunk.splitlines()] == ['"a"', '"b"']


def test_settings_flag_and_configure() -> None:
    assert Settings().access_log_flush_ms == 50.0
    parsed = _settings(build_parser().parse_args(["serve", "--access-log-flush-ms", "0"]), [])
    assert parsed.access_log_flush_ms == 0.0
    with pytest.raises(ValueError, match="access_log_flush_ms"):
        Settings(access_log_flush_ms=-1)
    root = logging.getLogger()
    before = list(root.handlers), root.level
    try:
        assert logs.configure(Settings(log_format="json"), Stream()).flush_delay == 0.05
        assert logs.configure(Settings(log_format="json", access_log_flush_ms=0), Stream()).flush_delay == 0.0
    finally:
        for h in list(root.handlers):
            if h not in before[0]:
                root.removeHandler(h)
        root.setLevel(before[1])


def test_the_environment_sets_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODELAPI_ACCESS_LOG_FLUSH_MS", "250")
    assert Settings().access_log_flush_ms == 250.0
