"""What authentication costs per request: ``PYTHONPATH=tests python tests/security/measure_auth.py`` (not a test;
tests/ on the path for ``helpers`` and ``toymodels``, as under pytest).

Prints the median time of one key lookup (``KeyStore.authenticate``), uncached and cached (``key_cache_s``),
on SQLite and, when it runs, on the local PostgreSQL, and of a whole in-process request (``GET /models``)
with authentication off and on.
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from modelapi.http.app import create_app
from modelapi.security.keys import KeyStore
from modelapi.settings import Settings
from toymodels import IrisClassifier


def median_us(fn: Callable[[], object], n: int = 2000) -> float:
    for _ in range(100):
        fn()
    times = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1e6


def lookup(state: Path, url: str | None, label: str) -> None:
    store, cached = KeyStore.open(state, url), KeyStore.open(state, url, cache_s=Settings().key_cache_s)
    key, _ = store.create("bench")
    print(f"key lookup, {label}: {median_us(lambda: store.authenticate(key)):.0f} us (median)")
    print(f"cached key (key_cache_s), {label}: {median_us(lambda: cached.authenticate(key)):.1f} us (median)")
    store.close()
    cached.close()


async def requests(state: Path, auth: str, key: str, n: int = 1000) -> float:
    app = create_app(
        [IrisClassifier()], Settings(state_dir=state, auth=auth, rate_limit=0, job_workers=0)
    )  # no per-key rate limit here
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            headers = {"authorization": f"Bearer {key}"}
            times = []
            for i in range(n + 100):
                t = time.perf_counter()
                r = await client.get("/models", headers=headers)
                if i >= 100:
                    times.append(time.perf_counter() - t)
                assert r.status_code == 200, r.text
    return statistics.median(times) * 1e6


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        lookup(Path(tmp) / "a", None, "SQLite")
        try:
            from helpers.services import postgres_schema

            with postgres_schema() as url:
                lookup(Path(tmp), url, "PostgreSQL on loopback")
        except BaseException as exc:  # pytest.skip raises outside pytest too
            print(f"PostgreSQL: not measured ({exc})")
        state = Path(tmp) / "b"
        key = KeyStore.open(state, None).create("bench")[0]
        off = asyncio.run(requests(state, "off", key))
        on = asyncio.run(requests(state, "on", key))
        print(f"GET /models in process: auth off {off:.0f} us, auth on (SQLite) {on:.0f} us, cost {on - off:.0f} us")


if __name__ == "__main__":
    main()
