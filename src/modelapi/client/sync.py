"""``Client`` and ``Job``: the blocking client. The logic is ``calls.Calls``; this drives it with httpx."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from random import Random
from typing import TYPE_CHECKING, Any, BinaryIO, TextIO

import httpx
import numpy as np

from .calls import Calls, base_url, headers_for
from .progress import Progress, progress_out
from .retry import Request, RetryPolicy, Send, Sleep, Steps

if TYPE_CHECKING:
    import pandas as pd

_BLOCK = 1 << 20


class Client:
    """Calls a modelapi server. ``Client("http://127.0.0.1:8000", api_key=None)``; use it as a context manager,
    or ``close()`` it, to release its connections.

    ``api_key``: sent as ``Authorization: Bearer``; default ``MODELAPI_API_KEY``. ``timeout``: seconds for
    connecting and for each read or write of one attempt. ``retries``: how many times a call is retried after
    a connection failure, a 429 or a 503 (backoff ``backoff`` doubling up to ``max_backoff`` seconds, with
    full jitter, at least the server's ``Retry-After``), all within ``deadline`` seconds. ``transport``: an
    httpx transport (``httpx.MockTransport`` in tests, ``httpx.WSGITransport``...). ``sleep``, ``clock`` and
    ``rng`` replace ``time.sleep``, ``time.monotonic`` and the jitter's random source (for tests).
    """

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
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        rng: Random | None = None,
    ) -> None:
        self.url = base_url(url)
        policy = RetryPolicy(timeout, retries, deadline, backoff, max_backoff, clock, rng)
        self._calls = Calls(policy, self.url)
        self._sleep = sleep
        self._http = httpx.Client(
            base_url=self.url, headers=headers_for(api_key, headers), verify=verify, transport=transport
        )

    def __repr__(self) -> str:
        return f"Client({self.url!r})"

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    # the calls -----------------------------------------------------------------------------------------------
    def predict(self, model: str, data: Any, version: str | int | None = None) -> dict[str, Any] | pd.DataFrame:
        """Predict with ``model``. A dict (one record) answers a dict, ``{"prediction": ..., "probabilities":
        {...}}``; a list of dicts, a DataFrame or a 2-D numpy array (columns in the model's feature order)
        answers a DataFrame: ``prediction`` and ``probabilities.<class>`` columns, one row per input row."""
        result: dict[str, Any] | pd.DataFrame = self._run(self._calls.predict(model, data, version))
        return result

    def infer(
        self,
        model: str,
        inputs: Mapping[str, Any] | np.ndarray,
        version: str | int | None = None,
        outputs: Sequence[str] | None = None,
        binary: bool | None = None,
    ) -> dict[str, np.ndarray]:
        """Open Inference Protocol (V2) inference: input name -> array in, output name -> array out.
        ``binary``: None picks the binary tensor extension for large numeric inputs, True or False forces it."""
        result: dict[str, np.ndarray] = self._run(self._calls.infer(model, inputs, version, outputs, binary))
        return result

    def models(self) -> list[dict[str, Any]]:
        """Every served model this key may use: name, version, inputs, outputs, state, URLs."""
        result: list[dict[str, Any]] = self._run(self._calls.models())
        return result

    def metadata(self, model: str, version: str | int | None = None) -> dict[str, Any]:
        """One model: its inputs and outputs (with class labels), versions, and an example request."""
        result: dict[str, Any] = self._run(self._calls.metadata(model, version))
        return result

    def ready(self, model: str | None = None, version: str | int | None = None) -> bool:
        """Whether the server (or ``model``) is ready to answer; one probe, not retried."""
        return bool(self._run(self._calls.ready(model, version)))

    def submit_job(self, model: str, data: str | Path | Any, *, idempotency_key: str | None = None) -> Job:
        """Score a file (.csv, .json, .ndjson, .parquet) or a DataFrame as a job; returns at once."""
        job, location = self._run(self._calls.submit_job(model, data, idempotency_key))
        return Job(self, job, location)

    def job(self, job_id: str) -> Job:
        """A job submitted earlier, by its id."""
        location = f"/jobs/{job_id}"
        return Job(self, self._run(self._calls.job_status(location)), location)

    # the loop --------------------------------------------------------------------------------------------
    def _run(self, steps: Steps) -> Any:
        outcome: Any = None
        try:
            while True:
                op = steps.send(outcome)
                if isinstance(op, Sleep):
                    self._sleep(op.seconds)
                    outcome = None
                else:
                    outcome = self._send(op)
        except StopIteration as stop:
            return stop.value

    def _send(self, op: Send) -> httpx.Response | httpx.TransportError:
        r = op.request
        try:
            if r.sink is not None:
                return self._download(r, op.timeout, r.sink)
            if r.file is None:
                return self._http.request(
                    r.method, r.path, headers=r.headers, content=r.content, params=r.params, timeout=op.timeout
                )
            with r.file.open("rb") as f:
                return self._http.request(
                    r.method, r.path, headers=r.headers, content=_blocks(f), params=r.params, timeout=op.timeout
                )
        except httpx.TransportError as exc:
            return exc

    def _download(self, r: Request, timeout: float, sink: Path) -> httpx.Response:
        with self._http.stream(r.method, r.path, headers=r.headers, params=r.params, timeout=timeout) as response:
            if not response.is_success:
                response.read()
                return response
            part = sink.with_name(sink.name + ".part")
            with part.open("wb") as f:
                for block in response.iter_bytes():
                    f.write(block)
            part.replace(sink)
            return response


def _blocks(f: BinaryIO) -> Iterator[bytes]:
    while block := f.read(_BLOCK):
        yield block


class Job:
    """A job on the server. ``info``: its last known description (status, progress, timings, error)."""

    def __init__(self, client: Client, info: dict[str, Any], location: str) -> None:
        self._client = client
        self.info = info
        self.location = location

    @property
    def id(self) -> str:
        return str(self.info["id"])

    def __repr__(self) -> str:
        return f"Job({self.id!r}, model={self.info.get('model')!r}, status={self.info.get('status')!r})"

    def status(self) -> dict[str, Any]:
        self.info = self._client._run(self._client._calls.job_status(self.location))
        return self.info

    def wait(self, progress: bool | TextIO = True, timeout: float | None = None) -> dict[str, Any]:
        """Wait until the job ends, with a progress bar on stderr (``progress``: False for none, or a stream).
        Returns its final description; a failed or cancelled job raises ``JobFailedError`` with the reason,
        and ``timeout`` seconds passing raises ``ClientTimeoutError`` (the job keeps running)."""
        bar = Progress(out) if (out := progress_out(progress, sys.stderr)) else None

        def seen(info: dict[str, Any]) -> None:
            self.info = info
            if bar is not None:
                bar.show(info)

        try:
            info: dict[str, Any] = self._client._run(
                self._client._calls.wait_job(self.location, timeout=timeout, on_status=seen)
            )
            return info
        finally:
            if bar is not None:
                bar.end()

    def result(self) -> pd.DataFrame:
        """The predictions, one row per input row, in input order (``prediction``, ``probabilities.<class>``)."""
        result: pd.DataFrame = self._client._run(self._client._calls.job_result(self.location))
        return result

    def save(self, path: str | Path) -> Path:
        """Stream the result into a file, in the format its suffix names (.csv, .json, .ndjson, .parquet);
        for results too large to hold as a DataFrame."""
        saved: Path = self._client._run(self._client._calls.save_job_result(self.location, Path(path)))
        return saved

    def cancel(self) -> dict[str, Any]:
        self.info = self._client._run(self._client._calls.cancel_job(self.location))
        return self.info
