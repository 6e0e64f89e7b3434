"""What an API key adds per request in the authentication and rate-limit middlewares, without the event loop.

    PYTHONPATH=src .venv/bin/python scripts/auth_cpu.py

Builds ``AuthMiddleware`` around ``RateLimitMiddleware`` around an app that does nothing, as ``create_app``
stacks them (the registered protocols' public and admin paths, metrics' events), once with authentication off
(the default on loopback) and once on with a cached key sent as ``Authorization: Bearer`` (SQLite store,
``key_cache_s`` 0.5 s, the rate limit raised out of the way, as ``app_cpu.py --auth``), and drives each with a
POST to the friendly predict route: best of 7 runs of 100,000 calls. The difference is the key's own cost in
the middlewares; ``app_cpu.py --auth`` shows it within a whole request, where it is too small to tell apart
from a loaded machine's noise.

Then what metrics add to every request (on in both configurations): the three events a one-batch request
emits (started, batch run, finished), built and handed through ``Events`` to a ``MetricsObserver``.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

from modelapi.events import BatchRun, Events, RequestFinished, RequestStarted
from modelapi.metrics import MetricsObserver
from modelapi.protocols import registered
from modelapi.security.auth import Auth, AuthMiddleware, PublicPaths
from modelapi.security.keys import KeyStore
from modelapi.security.limits import KeyLimits, RateLimitMiddleware
from modelapi.settings import Settings

HEADERS = [(b"content-type", b"application/json"), (b"host", b"127.0.0.1"), (b"content-length", b"84")]


async def nothing(scope: Any, receive: Any, send: Any) -> None:
    return None


def best_us(app: Any, headers: list[tuple[bytes, bytes]], n: int = 100_000, repeats: int = 7) -> float:
    scope = {
        "type": "http",
        "method": "POST",
        "path": "/models/logreg/predict",
        "query_string": b"",
        "headers": headers,
    }
    best = float("inf")
    for _ in range(repeats):
        started = time.process_time()
        for _ in range(n):
            call = app(dict(scope), None, None)  # nothing awaits: one send runs the whole stack
            try:  # noqa: SIM105 (contextlib.suppress would cost more than what is measured)
                call.send(None)
            except StopIteration:
                pass
        best = min(best, (time.process_time() - started) / n * 1e6)
    return best


def events_us(n: int = 100_000, repeats: int = 7) -> float:
    events = Events()
    events.subscribe(MetricsObserver())
    best = float("inf")
    for _ in range(repeats):
        started = time.process_time()
        for _ in range(n):  # as Call and the batcher emit them, each behind its check of active
            if events.active:
                events.request_started(RequestStarted("logreg", "1", "rest", "id"))
            if events.active:
                events.batch_run(BatchRun("logreg", "1", 1, 1, 0.0001))
            if events.active:
                events.request_finished(RequestFinished("logreg", "1", "rest", 200, 1, 0.0, 0.0001, 0.0003, "id"))
        best = min(best, (time.process_time() - started) / n * 1e6)
    return best


def main() -> None:
    state = Path(tempfile.mkdtemp(prefix="auth-cpu-"))
    store = KeyStore.open(state, None, cache_s=Settings().key_cache_s)
    key, _ = store.create("auth-cpu")
    events = Events()
    events.subscribe(MetricsObserver())
    public = PublicPaths(path for protocol in registered() for path in protocol.public_paths)
    admin = frozenset(path for protocol in registered() for path in protocol.admin_paths)

    def stack(auth: Auth) -> Any:
        limits = KeyLimits(1e6, 1_000_000, None, events)
        inner = RateLimitMiddleware(nothing, limits=limits)
        return AuthMiddleware(inner, auth=auth, admin_paths=admin, public_paths=public, events=events)

    off = best_us(stack(Auth(None, "off")), HEADERS)
    on = best_us(stack(Auth(store, "on")), [*HEADERS, (b"authorization", f"Bearer {key}".encode())])
    print(f"middlewares: auth off {off:.2f} µs/request, auth on {on:.2f} µs, the key adds {on - off:.2f} µs")
    store.close()
    print(f"metrics: a request's three events {events_us():.2f} µs")


if __name__ == "__main__":
    main()
