"""Goodput under overload, in process: what the data plane refuses on the head, drops from its queue, and why.

- a call whose expected wait (the batcher's running batch and queue, at its recent batch time) plus its own
  batch's run is over ``max_queue_ms`` is refused at once: 503 with ``Retry-After``, in the route's error style,
  observed as ``RequestRejected("overloaded")``;
- a call still queued when its ``max_queue_ms`` runs out never reaches the model (503, reason ``queue_time``);
- a client that disconnects while its rows wait is dropped before they join a batch.

The model records every row it is given, so "never reached the model" is checked, not assumed.
"""

from __future__ import annotations

import asyncio
import re
import threading
import time
from collections.abc import Mapping
from typing import Any

import numpy as np
import orjson
from starlette.types import Message

from helpers.repo import EventLog
from modelapi.events import RequestRejected
from modelapi.http.app import create_app
from modelapi.models.base import Model
from modelapi.settings import Settings
from modelapi.signature import Signature, TensorSpec


class Recorder(Model):
    """Sleeps the batch's largest ``seconds`` and remembers every value it was given."""

    signature = Signature.from_features({"seconds": "FP64"}, outputs=[TensorSpec("seconds", "FP64", (-1,))])

    def __init__(self) -> None:
        self.name = "slow"
        self.seen: list[float] = []
        self.lock = threading.Lock()

    def predict(self, inputs: Mapping[str, np.ndarray]) -> Mapping[str, np.ndarray]:
        seconds = inputs["seconds"]
        with self.lock:
            self.seen.extend(float(s) for s in seconds)
        time.sleep(float(np.max(seconds, initial=0.0)))
        return {"seconds": seconds}


def _body(seconds: float) -> bytes:
    return orjson.dumps({"inputs": [{"name": "seconds", "datatype": "FP64", "shape": [1], "data": [seconds]}]})


async def _call(app: Any, seconds: float, receive: Any = None) -> tuple[int, dict[bytes, bytes], bytes]:
    """POST /v2/models/slow/infer; ``receive`` overrides the client (default: the body, then no disconnect)."""
    body = _body(seconds)
    path = "/v2/models/slow/infer"
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"test"), (b"content-type", b"application/json")],
        "client": ("127.0.0.1", 1234),
        "server": ("test", 80),
    }
    sent: list[Message] = []
    messages = [{"type": "http.request", "body": body, "more_body": False}]

    async def default_receive() -> Message:
        if messages:
            return messages.pop()
        await asyncio.Event().wait()  # the client stays
        raise AssertionError

    async def send(message: Message) -> None:
        sent.append(message)

    await app(scope, receive or default_receive, send)
    if not sent:
        return 0, {}, b""
    start = next(m for m in sent if m["type"] == "http.response.start")
    payload = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return start["status"], dict(start["headers"]), payload


def _app(**settings: Any) -> tuple[Any, Recorder, EventLog]:
    """Early retries are not held: ``_call``'s requests all come from one address and port, so each one after a 503
    would be held as its early retry and refused (tests/http/test_holds.py)."""
    model = Recorder()
    options = {"job_workers": 0, "metrics": False, "hold_early_retries": False, **settings}
    app = create_app([model], Settings(**options))
    log = EventLog()
    app.state.dataplane.events.subscribe(log)
    return app, model, log


async def _running(model: Recorder, seconds: float, times: int = 1) -> None:
    """Returns once the model has started a batch with ``seconds`` for the ``times``-th time (on a loaded
    machine, a fixed sleep may end before it has)."""
    for _ in range(2000):
        if model.seen.count(seconds) >= times:
            return
        await asyncio.sleep(0.005)
    raise AssertionError(f"no batch with {seconds} started: {model.seen}")


def _rejected(log: EventLog) -> list[tuple[str, int]]:
    return [(e.reason, e.status) for e in log.of(RequestRejected)]


def test_an_expected_wait_over_max_queue_ms_is_refused_on_the_head() -> None:
    app, model, log = _app(max_queue_ms=50)

    async def main() -> None:
        async with app.router.lifespan_context(app):
            model.seen.clear()  # the warm-up's row
            assert (await _call(app, 0.3))[0] == 200  # the model's batches: about 0.3 s each
            running = asyncio.create_task(_call(app, 0.3))
            await _running(model, 0.3, 2)
            reads = 0

            async def receive() -> Message:
                nonlocal reads
                reads += 1
                return {"type": "http.request", "body": _body(0.0), "more_body": False}

            started = time.monotonic()
            status, headers, payload = await _call(app, 0.0, receive)
            assert time.monotonic() - started < 0.2  # at once, not after the running batch
            assert status == 503 and headers[b"retry-after"] == b"1" and reads == 0
            assert "max_queue_ms" in orjson.loads(payload)["error"]  # V2's {"error": ...} style
            assert (await running)[0] == 200
            # idle, the model takes a call whatever its batches take: only a wait counts them against the budget
            assert (await _call(app, 0.0))[0] == 200

    asyncio.run(main())
    assert model.seen == [0.3, 0.3, 0.0]
    assert ("overloaded", 503) in _rejected(log)


def test_requests_admitted_whose_bodies_are_still_arriving_count_in_the_expected_wait() -> None:
    """Under a flood, heads arrive faster than bodies: each admitted call will be queued ahead of the next one,
    so it counts before its body is in (else hundreds are admitted, then dropped for queue time after all the
    work of reading and decoding them)."""
    # one row a batch: each call its own batch. The batches take 0.1 s and a bit: the budget sits between two
    # (the second call's answer) and three (the third's), nearer three, so a loaded machine's slower batch
    # still admits the second
    app, _model, log = _app(max_queue_ms=280, batch_max_size=1)

    async def main() -> None:
        async with app.router.lifespan_context(app):
            assert (await _call(app, 0.1))[0] == 200  # the batch time is known: about 0.1 s
            release = asyncio.Event()

            def slow_body() -> Any:
                sent = False

                async def receive() -> Message:  # admitted on the head; the body comes later, then nothing
                    nonlocal sent
                    await release.wait()
                    if sent:
                        await asyncio.Event().wait()
                    sent = True
                    return {"type": "http.request", "body": _body(0.1), "more_body": False}

                return receive

            first = asyncio.create_task(_call(app, 0.1, slow_body()))
            second = asyncio.create_task(_call(app, 0.1, slow_body()))
            await asyncio.sleep(0.05)
            # both in: answered after about 0.1 s (none ahead) and 0.2 s (one ahead, then its own)
            assert app.state.dataplane.gate.inflight == {"slow": 2}
            reads = 0

            async def receive() -> Message:
                nonlocal reads
                reads += 1
                return {"type": "http.request", "body": _body(0.0), "more_body": False}

            status, _, payload = await _call(app, 0.0, receive)  # two batches ahead, then its own: 0.3 s > 280 ms
            assert status == 503 and reads == 0
            error = orjson.loads(payload)["error"]
            answer = re.search(r"would answer this request in about (\d+) ms", error)
            assert "max_queue_ms" in error and answer is not None and int(answer[1]) >= 290
            release.set()
            assert [(await first)[0], (await second)[0]] == [200, 200]
            # answered: nothing arrives any more, so a new call is admitted at once
            assert (await _call(app, 0.0))[0] == 200

    asyncio.run(main())
    assert ("overloaded", 503) in _rejected(log)


def test_a_request_whose_queue_time_runs_out_never_reaches_the_model() -> None:
    app, model, log = _app(max_queue_ms=100)  # batching on: the second request waits for the first's batch

    async def main() -> None:
        async with app.router.lifespan_context(app):
            model.seen.clear()  # the warm-up's row
            first = asyncio.create_task(_call(app, 0.5))
            await _running(model, 0.5)  # the first runs; nothing has finished, so nothing is refused on the head
            status, headers, payload = await _call(app, 0.01)
            assert status == 503 and headers[b"retry-after"] == b"1"
            assert "queue-time limit" in orjson.loads(payload)["error"]
            assert (await first)[0] == 200

    asyncio.run(main())
    assert model.seen == [0.5]  # the dropped request's 0.01 never ran
    assert ("queue_time", 503) in _rejected(log)
    assert app.state.dataplane.gate.inflight == {}


def test_a_client_that_disconnects_while_waiting_is_dropped_before_its_batch() -> None:
    app, model, log = _app()

    async def main() -> None:
        async with app.router.lifespan_context(app):
            model.seen.clear()  # the warm-up's row
            first = asyncio.create_task(_call(app, 0.4))
            await _running(model, 0.4)
            messages = [{"type": "http.request", "body": _body(0.02), "more_body": False}]

            async def leaving() -> Message:  # the body, then the client goes away while its rows wait
                if messages:
                    return messages.pop()
                await asyncio.sleep(0.1)
                return {"type": "http.disconnect"}

            assert (await _call(app, 0.02, leaving))[0] == 499  # nobody reads it; the access log says 499
            assert (await first)[0] == 200

    asyncio.run(main())
    assert model.seen == [0.4]
    assert ("disconnected", 499) in _rejected(log)
    assert app.state.dataplane.gate.inflight == {}


def test_a_jobs_chunk_is_never_refused_or_dropped_for_queue_time() -> None:
    """Job chunks (``timed=False``) are batch work: they wait their turn whatever ``max_queue_ms`` says."""
    from modelapi.context import CallContext
    from modelapi.dataplane import DataPlane
    from modelapi.inference import InferenceRequest

    model = Recorder()
    plane = DataPlane.from_settings(Settings(max_queue_ms=50, job_workers=0), models=[model])
    chunk = CallContext("jobs", timed=False)

    def rows(seconds: float) -> InferenceRequest:
        return InferenceRequest({"seconds": np.array([seconds])})

    async def main() -> None:
        await plane.start()
        model.seen.clear()
        await plane.infer("slow", rows(0.3))  # the batch time is known: 0.3 s, over the 50 ms budget
        running = asyncio.create_task(plane.infer("slow", rows(0.3)))
        await asyncio.sleep(0.05)
        answer = await plane.infer("slow", rows(0.01), chunk)  # admitted, and run after 250 ms in the queue
        assert answer.outputs["seconds"].tolist() == [0.01]
        await running
        await plane.close()

    asyncio.run(main())
    assert model.seen == [0.3, 0.3, 0.01]
