"""Instructions per request of the modelapi app in process, counted by callgrind: a measure that other load on the
machine does not move (CPU time on a shared 2-core machine moved by 2x between runs of the same code).

    STUB_MODEL=1 PYTHONHASHSEED=0 valgrind --tool=callgrind --instr-atstart=no \\
        --toggle-collect=sys_call_tracing --callgrind-out-file=/tmp/cg.out \\
        .venv/bin/python scripts/app_ir.py [--key] [rest|v2-json|v2-binary] N [ROWS]
    # then: Ir (the "Collected" line) / N

The app as ``scripts/app_cpu.py`` builds it (the bench's LogisticRegression, bodies of ROWS rows (default 1), the
access line to /dev/null), behind ``http/lifecycle.Lifecycle`` as the server runs it; one request at a time, each
stamped as the only one in progress. After a warm-up, the script turns callgrind's instrumentation on and runs N
requests inside ``sys.call_tracing``, the one function whose instructions are collected. Under valgrind every run is
about 50x slower, so the batcher's inline budget is raised to keep the inline path a real server takes.
``STUB_MODEL=1``: each batch answers what the model answered once, so that the count is modelapi's own work (and the
codecs', orjson's, numpy's), not scikit-learn's.
``--key``: as the bench's production server runs (``bench/servers.modelapi_production``): authentication on, an API
key created in a temporary state directory's key store and sent as ``Authorization: Bearer KEY``, and the key's
rate limit on but above any load (1,000,000 a second, bursts of 1,000,000), so its token bucket is paid for; the
key cache's TTL (``key_cache_s``) is stretched 50x, as valgrind slows the run, so the key is looked up in the store
about as rarely a request as at full speed.
"""

from __future__ import annotations

import asyncio
import gc
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import asgi_app  # scripts/, beside this file
from bench import workload

from modelapi import batching, logs
from modelapi.http.app import create_app
from modelapi.http.lifecycle import Lifecycle
from modelapi.security.keys import KeyStore
from modelapi.settings import Settings

PATHS = {
    "rest": "/models/logreg/predict",
    "v2-json": "/v2/models/logreg/infer",
    "v2-binary": "/v2/models/logreg/infer",  # Triton's binary tensor extension, outputs binary too
}


def main(kind: str, n: int, rows: int = 1, *, keyed: bool = False) -> None:
    batching.INLINE_BUDGET_S = 10.0  # valgrind's slowness must not send the batches to the model's thread
    tmp = Path(tempfile.mkdtemp(prefix="app-ir-"))
    work = workload.build(tmp, (rows,))
    body = work.body(kind, rows)
    data = body.data()
    headers = [(k.lower().encode(), v.encode()) for k, v in body.headers().items()]
    headers += [(b"host", b"127.0.0.1"), (b"content-length", str(len(data)).encode())]
    settings = Settings(models=[str(work.model_path)], log_level="info")
    if keyed:
        state_dir = tmp / "state"
        # the key cache's TTL stretched as valgrind slows the run (about 50x): a real server at full speed looks
        # its key up once in thousands of requests, not once in tens
        settings = Settings(
            models=[str(work.model_path)], log_level="info", state_dir=state_dir, auth="on",
            rate_limit=1_000_000, rate_burst=1_000_000, key_cache_s=Settings().key_cache_s * 50,
        )  # fmt: skip
        store = KeyStore.open(state_dir, None)  # what `modelapi keys create --name bench` does
        key, _ = store.create("bench")
        store.close()
        headers.append((b"authorization", f"Bearer {key}".encode()))
    logs.configure(settings, stream=open(os.devnull, "w"))  # noqa: SIM115 (for the process's life)
    app = create_app(None, settings)
    outer = Lifecycle(lambda: app)  # the outermost app, as the server runs it
    loop = uvloop.new_event_loop()
    asyncio.set_event_loop(loop)
    lifespan = loop.run_until_complete(asgi_app.start(outer))

    async def serving() -> None:
        while outer.state != "serving":
            await asyncio.sleep(0.01)

    loop.run_until_complete(serving())
    one = asgi_app.poster(outer, PATHS[kind], headers, data)

    async def many(k: int) -> None:
        for _ in range(k):
            await one()

    loop.run_until_complete(many(300))
    if os.environ.get("STUB_MODEL"):
        repository = app.state.dataplane.repository
        for name in repository.names():
            for handle in repository.entry(name).serving.values():
                stub(handle.batcher)
        loop.run_until_complete(many(50))
    gc.collect()
    instrument = subprocess.Popen(["callgrind_control", "-i", "on", str(os.getpid())], stdout=subprocess.DEVNULL)
    while instrument.poll() is None:  # valgrind turns it on while this process waits
        time.sleep(0.05)
    sys.call_tracing(loop.run_until_complete, (many(n),))
    lifespan.cancel()
    print(f"{kind}{' with a key' if keyed else ''}: {n} requests of {rows} row(s) counted")


def stub(batcher: Any) -> None:
    """Each batch of ``batcher`` answers what its model answered the first time."""
    real = batcher.run
    fixed: dict[str, np.ndarray] = {}

    def run(inputs: Mapping[str, np.ndarray], rows: int) -> Mapping[str, np.ndarray]:
        if not fixed:
            fixed.update(real(inputs, rows))
        return fixed

    batcher.run = run


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if a != "--key"]
    main(
        args[0] if args else "rest",
        int(args[1]) if len(args) > 1 else 200,
        int(args[2]) if len(args) > 2 else 1,
        keyed="--key" in sys.argv[1:],
    )
