"""Instructions per request of a whole server process over a socket, counted by callgrind: the HTTP floor against
modelapi at one connection, with everything between the socket and the answer (the HTTP protocol included, which
``scripts/app_ir.py`` leaves out). Other load on the machine does not move the count.

    PYTHONHASHSEED=0 PYTHONPATH=$PWD/src .venv/bin/python scripts/server_ir.py \\
        [floor|modelapi|modelapi-key] [rest|v2-json] N

The server runs under ``valgrind --tool=callgrind --instr-atstart=no``; after a warm-up of keep-alive requests
from this process, instrumentation is turned on for N requests, one at a time, then off, and the counts are
dumped: ``Ir / N`` is printed with the dump's path (``callgrind_annotate --inclusive=yes PATH`` breaks it
down by function). The model is the bench's LogisticRegression, the body the bench's 1-row body; modelapi is
served as ``bench/servers.modelapi`` starts it (default settings, access lines to a file). Under valgrind a
model call is about 50x slower, so modelapi's batcher is told to keep running 1-row batches inline as it does
at full speed (``batching.INLINE_BUDGET_S``, set by ``--serve``, this script's own wrapper of ``modelapi``).
The user-space instructions are what this counts; the kernel's send and receive are the same for both.
``modelapi-key``: modelapi as ``bench/servers.modelapi_production`` starts it (an API key required, created in a
temporary key store, and sent; its rate limit on, above any load), the key cache's TTL stretched 50x as valgrind
slows the server, so that the key is looked up in the store about as rarely a request as at full speed.
"""

from __future__ import annotations

import http.client
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench import servers, workload

PATHS = {"rest": "/models/logreg/predict", "v2-json": "/v2/models/logreg/infer"}
WARM = 300


def serve(argv: list[str]) -> int:
    """``modelapi`` with 1-row batches kept inline under valgrind's slowness."""
    from modelapi import batching
    from modelapi.cli import main

    batching.INLINE_BUDGET_S = 10.0
    return main(argv)


def _wait(conn_port: int, path: str, deadline: float) -> None:
    while time.monotonic() < deadline:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", conn_port, timeout=30)
            conn.request("GET", path)
            if conn.getresponse().status == 200:
                conn.close()
                return
        except OSError:
            time.sleep(1.0)
    raise SystemExit("the server did not answer in time")


def main(contender: str, kind: str, n: int) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="server-ir-"))
    work = workload.build(tmp, (1,))
    body = work.body("v2-json" if kind == "v2-json" else "rest", 1)
    data = body.data()
    port = servers.free_port()
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    client_headers: dict[str, str] = {}
    if contender == "floor":
        path, ready = "/predict", "/health"
        env["BENCH_MODEL"] = str(work.model_path)
        argv = [str(servers.VENV_BIN / "uvicorn"), *servers.floor(work.model_path).argv[1:]]
    elif contender == "modelapi-key":
        path, ready = PATHS[kind], "/v2/health/ready"
        spec = servers.modelapi_production("modelapi-key", [work.model_path], tmp / "state")
        argv = [sys.executable, __file__, "--serve", *spec.argv[len(servers.modelapi_command()) :]]
        env.update(spec.env)
        env["MODELAPI_KEY_CACHE_S"] = "25"  # 0.5 s (the default) x valgrind's slowness
        client_headers = spec.client_headers
    else:
        path, ready = PATHS[kind], "/v2/health/ready"
        model = str(work.model_path)
        argv = [sys.executable, __file__, "--serve", "serve", model, "--host", "127.0.0.1", "--port", "{port}"]
    argv = [a.replace("{port}", str(port)) for a in argv]
    out = tmp / "cg.out"
    log = open(tmp / "server.log", "wb")  # noqa: SIM115 (until the server ends)
    server = subprocess.Popen(
        ["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out}", *argv],
        env=env, stdout=log, stderr=subprocess.STDOUT, cwd=Path(__file__).resolve().parents[1],
    )  # fmt: skip
    try:
        _wait(port, ready, time.monotonic() + 600)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        headers = {**body.headers(), "Content-Length": str(len(data)), **client_headers}

        def one() -> None:
            conn.request("POST", path, body=data, headers=headers)
            answer = conn.getresponse()
            answer.read()
            if answer.status != 200:
                raise SystemExit(f"answer {answer.status}")

        for _ in range(WARM):
            one()
        subprocess.run(["callgrind_control", "-i", "on", str(server.pid)], check=True, capture_output=True)
        for _ in range(n):
            one()
        subprocess.run(["callgrind_control", "-i", "off", str(server.pid)], check=True, capture_output=True)
        subprocess.run(["callgrind_control", "-d", str(server.pid)], check=True, capture_output=True)
        conn.close()
    finally:
        server.terminate()
        server.wait(120)
        log.close()
    total = 0
    dumps = sorted(tmp.glob("cg.out*"))
    for dump in dumps:
        # "totals:" ends a dump; its "summary:" is 0 when instrumentation was switched on and off while running
        for line in reversed(dump.read_text(errors="replace").splitlines()):
            if line.startswith("totals:"):
                total += int(line.split()[1])
                break
    names = [str(d) for d in dumps]
    print(f"{contender} {kind}: {total / n:,.0f} instructions a request ({n} requests); dumps: {names}")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--serve"]:
        sys.exit(serve(sys.argv[2:]))
    main(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else "rest", int(sys.argv[3]) if len(sys.argv) > 3 else 300)
