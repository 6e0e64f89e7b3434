"""An overload cell as a timeline: every 100 ms the server's CPU, its requests in flight, and the successful and
refused requests a second, scraped from its operations port; with the batches' mean size at saturation and under
overload.

The server runs as in ``bench.overload`` (core 0, ``--max-queue-ms 20``, the bench's 32-row V2 JSON requests); a
saturated cell (64 connections) runs first, then, after 3 idle seconds, the overload cell (``CONNECTIONS``
connections of clients that wait ``Retry-After``) under the timeline. Used to see whether the core idles under
overload, and when refusals come (docs/overload-log.md). Its time counts from the cell's start, which starts its
probes before wrk: the first samples, and those after wrk's end, are of a server not under the flood.

    .venv/bin/python -m scripts.overload_timeline [CONNECTIONS] [SECONDS] [server options ...]
"""

from __future__ import annotations

import os
import re
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

from bench import procfs, servers, workload
from bench.overload import LOAD_CORE, RESULTS, ROWS, SERVER_CORE, cell

_REASON = re.compile(r'reason="([a-z_]+)"')


def scrape(url: str) -> dict[str, float]:
    """Requests in flight, successful ones, refused ones (by reason, ``refused:REASON``) and batches and their
    rows so far, summed over the server's models."""
    text = urllib.request.urlopen(url, timeout=2).read().decode()  # noqa: S310 (the server's own port)
    out: dict[str, float] = {"inflight": 0.0, "ok": 0.0, "refused": 0.0, "batches": 0.0, "rows": 0.0}
    for line in text.splitlines():
        if line.startswith("#") or " " not in line:
            continue
        name, value = line.rsplit(" ", 1)
        number = float(value)
        if name.startswith("modelapi_requests_in_flight{"):
            out["inflight"] += number
        elif name.startswith("modelapi_requests_total{") and 'code="2xx"' in name:
            out["ok"] += number
        elif name.startswith("modelapi_requests_rejected_total{"):
            out["refused"] += number
            found = _REASON.search(name)
            if found:
                key = "refused:" + found.group(1)
                out[key] = out.get(key, 0.0) + number
        elif name.startswith("modelapi_batch_rows_count{"):
            out["batches"] += number
        elif name.startswith("modelapi_batch_rows_sum{"):
            out["rows"] += number
    return out


def rows_per_batch(before: dict[str, float], after: dict[str, float]) -> float:
    batches = after["batches"] - before["batches"]
    return (after["rows"] - before["rows"]) / batches if batches else 0.0


def main(connections: int, seconds: int, extra: list[str]) -> None:
    os.sched_setaffinity(0, {LOAD_CORE})
    RESULTS.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        work = workload.build(Path(tmp), (ROWS,))
        body = work.body("v2-json", ROWS)
        ops = servers.free_port()
        argv = ("--max-queue-ms", "20", "--metrics-port", str(ops), *extra)
        spec = servers.modelapi("timeline", [work.model_path], *argv)
        with servers.serve(spec, core=SERVER_CORE, env=dict(os.environ), log_dir=RESULTS) as srv:
            url = f"http://127.0.0.1:{ops}/metrics"
            cell(srv, body, 64, 2, False)  # warm-up
            before = scrape(url)
            saturated = cell(srv, body, 64, 5, True)
            after = scrape(url)
            print(
                f"64 connections: {saturated.ok_rps:,.0f} OK/s, CPU {saturated.cpu_s / saturated.seconds:.0%}, "
                f"{saturated.cpu_s / max(1, saturated.statuses.get(200, 0)) * 1e6:.0f} us a served request, "
                f"{rows_per_batch(before, after):.0f} rows a batch"
            )
            time.sleep(3)
            samples: list[tuple[float, float, float, float, float]] = []
            stop = threading.Event()
            pids = procfs.tree(srv.process.pid)

            def sample() -> None:
                last, last_cpu, last_at = scrape(url), procfs.cpu_seconds(pids), time.monotonic()
                started = last_at
                while not stop.wait(0.1):
                    now, cpu, at = scrape(url), procfs.cpu_seconds(pids), time.monotonic()
                    dt = at - last_at
                    samples.append(
                        (
                            at - started,  # a sample is 100 ms plus a scrape apart: its time as taken
                            (cpu - last_cpu) / dt,
                            now["inflight"],
                            (now["ok"] - last["ok"]) / dt,
                            (now["refused"] - last["refused"]) / dt,
                        )
                    )
                    last, last_cpu, last_at = now, cpu, at

            sampler = threading.Thread(target=sample)
            before = scrape(url)
            sampler.start()
            flood = cell(srv, body, connections, seconds, True)
            stop.set()
            sampler.join()
            after = scrape(url)
        refused = {k.split(":", 1)[1]: int(v - before.get(k, 0.0)) for k, v in after.items() if ":" in k}
        print(
            f"{connections} connections: {flood.ok_rps:,.0f} OK/s ({flood.ok_rps / saturated.ok_rps:.0%} of "
            f"saturated), CPU {flood.cpu_s / flood.seconds:.0%}, "
            f"{flood.cpu_s / max(1, flood.statuses.get(200, 0)) * 1e6:.0f} us a served request, "
            f"{rows_per_batch(before, after):.0f} rows a batch; statuses {flood.statuses}; refused by reason {refused}"
        )
        print("   t s  CPU %  in flight    OK/s  refused/s")
        for at, cpu, inflight, ok, rejected in samples:
            print(f"{at:6.1f} {cpu:6.0%} {inflight:10.0f} {ok:7.0f} {rejected:10.0f}")


if __name__ == "__main__":
    args = sys.argv[1:]
    main(int(args[0]) if args else 640, int(args[1]) if len(args) > 1 else 10, args[2:])
