"""Instructions per request that modelapi's HTTP protocol costs over uvicorn's own, counted by callgrind: one
trivial ASGI app (it reads the body and answers a fixed JSON body with a content-length) served by the same
``uvicorn.Config`` (httptools, uvloop, the proxy step on, no access log, no Server or Date header, modelapi's
keep-alive) with ``http=`` either uvicorn's ``HttpToolsProtocol`` (``uvicorn``) or modelapi's
``security/slow_clients.protocol_class`` with the default settings (``modelapi``), over a real socket at one
connection, the bench's 1-row REST request. Everything but the protocol is the same, so the difference is the
protocol's own.

    PYTHONHASHSEED=0 PYTHONPATH=$PWD/src .venv/bin/python scripts/proto_ir.py [uvicorn|modelapi] N
    PYTHONHASHSEED=0 PYTHONPATH=$PWD/src .venv/bin/python scripts/proto_ir.py [uvicorn|modelapi] N --calls

As ``scripts/server_ir.py``: the server runs under ``valgrind --tool=callgrind --instr-atstart=no``, instrumented
for N keep-alive requests after a warm-up, and ``Ir / N`` is printed with the dump's path. With ``--calls`` it
runs without valgrind and prints the Python-level calls per request in the server process instead (counted with
``sys.setprofile`` over the same N requests, most frequent first).
"""

from __future__ import annotations

import collections
import http.client
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench import servers, workload

PATH = "/models/logreg/predict"
WARM = 300
ANSWER = b'{"predictions":[1]}'


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                await send({"type": message["type"] + ".complete"})
                if message["type"] == "lifespan.shutdown":
                    return
        return
    more = True
    while more:
        message = await receive()
        more = message.get("more_body", False)
    if scope["path"] == "/calls":
        _calls(scope["query_string"])
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(ANSWER))],
        }
    )
    await send({"type": "http.response.body", "body": ANSWER})


_counts: collections.Counter[str] = collections.Counter()


def _profile(frame: Any, event: str, arg: Any) -> None:
    if event == "call":
        code = frame.f_code
        _counts[f"{Path(code.co_filename).name}:{code.co_firstlineno} {code.co_qualname}"] += 1
    elif event == "c_call":
        _counts[f"C {getattr(arg, '__qualname__', arg)}"] += 1


def _calls(query: bytes) -> None:
    if query == b"on":
        _counts.clear()
        sys.setprofile(_profile)
    else:
        sys.setprofile(None)
        Path(os.environ["PROTO_IR_CALLS"]).write_text(json.dumps(_counts))


def serve(contender: str, port: int) -> None:
    import uvicorn

    from modelapi.http.pacing import Pacing
    from modelapi.http.shedding import Shedding
    from modelapi.security.slow_clients import protocol_class
    from modelapi.settings import Settings

    settings = Settings()
    http: Any = "httptools"
    if contender == "modelapi":
        http = protocol_class(
            settings.header_timeout_s,
            settings.max_header_bytes,
            Shedding(),
            Pacing(settings.pacing_slice_ms / 1000),
            body_timeout_s=settings.body_timeout_s,
        )
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=port,
        loop="uvloop",
        http=http,
        log_level="warning",
        access_log=False,
        server_header=False,
        date_header=False,
        lifespan="on",
        timeout_keep_alive=settings.keep_alive_s,  # type: ignore[arg-type]
    )
    uvicorn.Server(config).run()


def main(contender: str, n: int, calls: bool) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="proto-ir-"))
    work = workload.build(tmp, (1,))
    body = work.body("rest", 1)
    data = body.data()
    port = servers.free_port()
    env = {**os.environ, "PYTHONHASHSEED": "0", "PROTO_IR_CALLS": str(tmp / "calls.json")}
    out = tmp / "cg.out"
    argv = [sys.executable, __file__, "--serve", contender, str(port)]
    if not calls:
        argv = ["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out}", *argv]
    log = open(tmp / "server.log", "wb")  # noqa: SIM115 (until the server ends)
    server = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 600
        while True:
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
                conn.connect()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(1.0)
        headers = {**body.headers(), "Content-Length": str(len(data))}

        def one(path: str = PATH) -> None:
            conn.request("POST", path, body=data, headers=headers)
            answer = conn.getresponse()
            if answer.read() != ANSWER or answer.status != 200:
                raise SystemExit(f"answer {answer.status}")

        for _ in range(WARM):
            one()
        if calls:
            one("/calls?on")
        else:
            subprocess.run(["callgrind_control", "-i", "on", str(server.pid)], check=True, capture_output=True)
        for _ in range(n):
            one()
        if calls:
            one("/calls?off")
        else:
            subprocess.run(["callgrind_control", "-i", "off", str(server.pid)], check=True, capture_output=True)
            subprocess.run(["callgrind_control", "-d", str(server.pid)], check=True, capture_output=True)
        conn.close()
    finally:
        server.terminate()
        server.wait(120)
        log.close()
    if calls:
        counts = json.loads((tmp / "calls.json").read_text())
        print(f"{contender}: {sum(counts.values()) / n:.1f} calls a request ({n} requests)")
        for name, count in sorted(counts.items(), key=lambda kv: -kv[1]):
            if count >= n // 2:
                print(f"  {count / n:6.2f}  {name}")
        return
    total = 0
    dumps = sorted(tmp.glob("cg.out*"))
    for dump in dumps:
        for line in reversed(dump.read_text(errors="replace").splitlines()):
            if line.startswith("totals:"):
                total += int(line.split()[1])
                break
    print(f"{contender}: {total / n:,.0f} instructions a request ({n} requests); dumps: {[str(d) for d in dumps]}")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--serve"]:
        serve(sys.argv[2], int(sys.argv[3]))
    else:
        main(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 300, "--calls" in sys.argv)
