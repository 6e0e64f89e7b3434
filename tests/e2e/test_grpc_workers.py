"""``--grpc-port`` with ``--workers 2``: every worker serves gRPC on the one port, and SIGTERM lets calls in flight
finish before the process exits 0 (the data plane closes only after them)."""

from __future__ import annotations

import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import tritonclient.grpc as tc

from helpers.ports import free_port

from .server import serve


def _pid_of_answer(address: str, seconds: float = 0.0) -> int:
    """One call on a new connection (so the kernel may hand it to any worker); the worker's pid."""
    client = tc.InferenceServerClient(address)
    try:
        item = tc.InferInput("seconds", [1], "FP64")
        item.set_data_from_numpy(np.array([seconds]))
        return int(client.infer("sleepy", [item], client_timeout=30).as_numpy("pid")[0])
    finally:
        client.close()


def test_two_workers_serve_grpc_and_drain_it_on_sigterm(tmp_path: Path) -> None:
    port = free_port()
    address = f"127.0.0.1:{port}"
    args = ("toymodels:Sleepy", "--workers", "2", "--grpc-port", str(port), "--graceful-timeout", "10")
    with serve(*args, tmp_dir=tmp_path) as server:
        workers = server.worker_pids()
        assert len(workers) == 2
        seen: set[int] = set()
        deadline = time.monotonic() + 30
        while seen != set(workers) and time.monotonic() < deadline:
            # two slow calls at once: while one worker sleeps the other accepts, so both answer
            with ThreadPoolExecutor(2) as pool:
                seen.update(pool.map(lambda _: _pid_of_answer(address, 0.2), range(2)))
        assert seen == set(workers)
        assert server.log().count("modelapi is serving") == 1

        answered: list[int] = []
        slow = threading.Thread(target=lambda: answered.append(_pid_of_answer(address, 1.5)))
        slow.start()
        time.sleep(0.5)  # the call is in flight
        server.process.send_signal(signal.SIGTERM)
        slow.join(timeout=30)
        assert answered and answered[0] in workers  # finished during the drain
        assert server.process.wait(timeout=30) == 0
