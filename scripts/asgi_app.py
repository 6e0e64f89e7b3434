"""Drive the modelapi ASGI app in process (no sockets): its lifespan, and one request at a time.

Shared by ``scripts/app_cpu.py`` and ``scripts/codec_cpu.py``, which time what the app costs per request.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from modelapi.security.slow_clients import BODY_IN, IN_PROGRESS

#: the server's requests in progress while one request at a time is served: that one
ALONE = (None,)


async def start(app: Any) -> asyncio.Future[Any]:
    """Run ``app``'s lifespan startup (the models load); returns the lifespan's task, to cancel at the end."""
    startup: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    answers: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    await startup.put({"type": "lifespan.startup"})
    lifespan: asyncio.Future[Any] = asyncio.ensure_future(
        app({"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}, startup.get, answers.put)
    )
    assert (await answers.get())["type"] == "lifespan.startup.complete"
    return lifespan


def poster(app: Any, path: str, headers: list[tuple[bytes, bytes]], data: bytes) -> Callable[[], Awaitable[None]]:
    """A coroutine function that POSTs ``data`` to ``path`` once and checks the answer is a 200."""

    async def one() -> None:
        scope = {
            "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
            "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "",
            "headers": headers, "client": ("127.0.0.1", 40000), "server": ("127.0.0.1", 8000), "state": {},
            IN_PROGRESS: ALONE,  # as modelapi's HTTP protocol stamps it: this request is the only one
            BODY_IN: True,  # and its body arrived with its head
        }  # fmt: skip
        sent: list[dict[str, Any]] = []
        given = False

        async def receive() -> dict[str, Any]:
            nonlocal given
            if not given:
                given = True
                return {"type": "http.request", "body": data, "more_body": False}
            await asyncio.Event().wait()  # no disconnect
            raise AssertionError

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        await app(scope, receive, send)
        assert sent[0]["status"] == 200, sent

    return one
