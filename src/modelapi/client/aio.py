"""``AsyncClient`` and ``AsyncJob``: the asyncio (anyio) client. The logic is ``calls.Calls``, as for ``Client``;
only the loop that drives it awaits."""

from __future__ import annotations

import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from random import Random
from typing import TYPE_CHECKING, Any, TextIO

import anyio
import httpx
import numpy as np

from .calls import Calls, base_url, headers_for
from .progress import Progress, progress_out
from .retry import Request, RetryPolicy, Send, Sleep, Steps

if TYPE_CHECKING:
    import pandas as pd

_BLOCK = 1 << 20


class AsyncClient:
    """The same calls as ``Client``, awaited: ``async with AsyncClient(url) as client: await client.predict(...)``.

    The arguments are ``Client``'s; ``transport`` is an async httpx transport (``httpx.ASGITransport(app)``
    calls an app in this process) and ``sleep`` an async function (default ``anyio.sleep``)."""

    def __init__(
        self,
        url: str,
        api_key: str | None = None,
        *,
        timeout: float = 60.0,
        retries: int = 4,
        deadline: float = 120.0,
        backoff: float = 0.25,
        max_backoff: float = 10.0,
        headers: Mapping[str, str] | None = None,
        verify: bool | str = True,
        transport: httpx.AsyncBaseTransport | None = None,
        sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
        clock: Callable[[], float] = time.monotonic,
        rng: Random | None = None,
    ) -> None:
        self.url = base_url(url)
        policy = RetryPolicy(timeout, retries, deadline, backoff, max_backoff, clock, rng)
        self._calls = Calls(policy, self.url)
        self._sleep = sleep
        self._http = httpx.AsyncClient(
            base_url=self.url, headers=headers_for(api_key, headers), verify=verify, transport=transport
        )

    def __repr__(self) -> str:
        return f"AsyncClient({self.url!r})"

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    # the calls -----------------------------------------------------------------------------------------------
    async def predict(self, model: str, data: Any, version: str | int | None = None) -> dict[str, Any] | pd.DataFrame:
        """As ``Client.predict``."""
        result: dict[str, Any] | pd.DataFrame = await self._run(self._calls.predict(model, data, version))
        return result

    async def infer(
        self,
        model: str,
        inputs: Mapping[str, Any] | np.ndarray,
        version: str | int | None = None,
        outputs: Sequence[str] | None = None,
        binary: bool | None = None,
    ) -> dict[str, np.ndarray]:
        """As ``Client.infer``."""
        result: dict[str, np.ndarray] = await self._run(self._calls.infer(model, inputs, version, outputs, binary))
        return result

    async def models(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = await self._run(self._calls.models())
        return result

    async def metadata(self, model: str, version: str | int | None = None) -> dict[str, Any]:
        result: dict[str, Any] = await self._run(self._calls.metadata(model, version))
        return result

    async def ready(self, model: str | None = None, version: str | int | None = None) -> bool:
        return bool(await self._run(self._calls.ready(model, version)))

    async def submit_job(self, model: str, data: str | Path | Any, *, idempotency_key: str | None = None) -> AsyncJob:
        job, location = await self._run(self._calls.submit_job(model, data, idempotency_key))
        return AsyncJob(self, job, location)

    async def job(self, job_id: str) -> AsyncJob:
        location = f"/jobs/{job_id}"
        return AsyncJob(self, await self._run(self._calls.job_status(location)), location)

    # the loop --------------------------------------------------------------------------------------------
    async def _run(self, steps: Steps) -> Any:
        outcome: Any = None
        try:
            while True:
                op = steps.send(outcome)
                if isinstance(op, Sleep):
                    await self._sleep(op.seconds)
                    outcome = None
                else:
                    outcome = await self._send(op)
        except StopIteration as stop:
            return stop.value

    async def _send(self, op: Send) -> httpx.Response | httpx.TransportError:
        r = op.request
        content = r.content if r.file is None else _blocks(r.file)
        try:
            if r.sink is not None:
                return await self._download(r, op.timeout, r.sink)
            return await self._http.request(
                r.method, r.path, headers=r.headers, content=content, params=r.params, timeout=op.timeout
            )
        except httpx.TransportError as exc:
            return exc

    async def _download(self, r: Request, timeout: float, sink: Path) -> httpx.Response:
        async with self._http.stream(r.method, r.path, headers=r.headers, params=r.params, timeout=timeout) as response:
            if not response.is_success:
                await response.aread()
                return response
            part = sink.with_name(sink.name + ".part")
            async with await anyio.open_file(part, "wb") as f:
                async for block in response.aiter_bytes():
                    await f.write(block)
            await anyio.Path(part).replace(sink)
            return response


async def _blocks(path: Path) -> AsyncIterator[bytes]:
    async with await anyio.open_file(path, "rb") as f:
        while block := await f.read(_BLOCK):
            yield block


class AsyncJob:
    """As ``Job``, awaited."""

    def __init__(self, client: AsyncClient, info: dict[str, Any], location: str) -> None:
        self._client = client
        self.info = info
        self.location = location

    @property
    def id(self) -> str:
        return str(self.info["id"])

    def __repr__(self) -> str:
        return f"AsyncJob({self.id!r}, model={self.info.get('model')!r}, status={self.info.get('status')!r})"

    async def status(self) -> dict[str, Any]:
        self.info = await self._client._run(self._client._calls.job_status(self.location))
        return self.info

    async def wait(self, progress: bool | TextIO = True, timeout: float | None = None) -> dict[str, Any]:
        bar = Progress(out) if (out := progress_out(progress, sys.stderr)) else None

        def seen(info: dict[str, Any]) -> None:
            self.info = info
            if bar is not None:
                bar.show(info)

        try:
            info: dict[str, Any] = await self._client._run(
                self._client._calls.wait_job(self.location, timeout=timeout, on_status=seen)
            )
            return info
        finally:
            if bar is not None:
                bar.end()

    async def result(self) -> pd.DataFrame:
        result: pd.DataFrame = await self._client._run(self._client._calls.job_result(self.location))
        return result

    async def save(self, path: str | Path) -> Path:
        """As ``Job.save``."""
        saved: Path = await self._client._run(self._client._calls.save_job_result(self.location, Path(path)))
        return saved

    async def cancel(self) -> dict[str, Any]:
        self.info = await self._client._run(self._client._calls.cancel_job(self.location))
        return self.info
