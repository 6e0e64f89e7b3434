"""A scripted server for the client's retry tests: ``httpx.MockTransport`` answers from a list, a fake clock
that only the fake sleep moves, and a seeded random source, so every wait is known exactly."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx

Answer = httpx.Response | Exception | Callable[[httpx.Request], httpx.Response]


@dataclass
class FakeTime:
    now: float = 1000.0
    sleeps: list[float] = field(default_factory=list)

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds

    async def async_sleep(self, seconds: float) -> None:
        self.sleep(seconds)


@dataclass
class Script:
    """Answers requests in order; records each request (its headers and body, read)."""

    answers: list[Answer]
    requests: list[httpx.Request] = field(default_factory=list)
    bodies: list[bytes] = field(default_factory=list)

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.bodies.append(request.read())
        self.requests.append(request)
        if not self.answers:
            raise AssertionError(f"unexpected request {request.method} {request.url}")
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        if callable(answer) and not isinstance(answer, httpx.Response):
            return answer(request)
        return answer

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self)


SEED = 7


def jitters(count: int, backoff: float = 0.25, max_backoff: float = 10.0) -> list[float]:
    """The full-jitter waits a client seeded with ``SEED`` draws for retries 0..count-1."""
    rng = random.Random(SEED)
    return [rng.uniform(0.0, min(max_backoff, backoff * 2.0**n)) for n in range(count)]


def problem(status: int, detail: str, request_id: str = "rid-1", **headers: str) -> httpx.Response:
    body = {"type": "about:blank", "title": "t", "status": status, "detail": detail, "request_id": request_id}
    return httpx.Response(
        status, json=body, headers={"content-type": "application/problem+json", "x-request-id": request_id, **headers}
    )


ANSWER = {"prediction": "setosa", "probabilities": {"setosa": 0.9, "versicolor": 0.1, "virginica": 0.0}}
ROW = {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}
