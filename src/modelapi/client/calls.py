"""The client's logic, written once for ``Client`` and ``AsyncClient``: each call builds its requests, runs
them through ``retry.exchange`` and decodes the answers, as a generator of ``Send``/``Sleep`` operations
(``retry.py``) that a sync or an async loop drives. Nothing here does I/O.
"""

from __future__ import annotations

import io
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import numpy as np
import orjson

from . import tables, tensors
from .environment import api_key_from_environment
from .errors import ClientError, ClientTimeoutError, JobFailedError, error_for
from .retry import Request, RetryPolicy, Sleep, Steps, exchange

#: job input formats by file suffix (docs/jobs.md)
JOB_MEDIA = {
    ".csv": "text/csv",
    ".json": "application/json",
    ".ndjson": "application/x-ndjson",
    ".jsonl": "application/x-ndjson",
    ".parquet": "application/vnd.apache.parquet",
}
JOB_FORMATS = {".csv": "csv", ".json": "json", ".ndjson": "ndjson", ".jsonl": "ndjson", ".parquet": "parquet"}
FINISHED = ("succeeded", "failed", "cancelled")
JSON_HEADERS = {"content-type": "application/json", "accept": "application/json"}


def _default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(f"cannot send a {type(obj).__name__} as JSON; give numbers, strings, booleans or lists")


def dumps(value: Any) -> bytes:
    return orjson.dumps(value, default=_default, option=orjson.OPT_SERIALIZE_NUMPY)


def model_path(model: str, version: str | int | None = None) -> str:
    path = f"/models/{quote(model, safe='')}"
    return path if version is None else f"{path}/versions/{quote(str(version), safe='')}"


def _v2_path(model: str, version: str | int | None) -> str:
    path = f"/v2/models/{quote(model, safe='')}"
    return path if version is None else f"{path}/versions/{quote(str(version), safe='')}"


def _json_of(response: httpx.Response) -> Any:
    try:
        return orjson.loads(response.content)
    except orjson.JSONDecodeError:
        raise ClientError(
            f"{response.request.method} {response.request.url.path}: the server's answer is not JSON "
            f"({response.headers.get('content-type', 'no content type')}); is this a modelapi server?"
        ) from None


def base_url(url: str) -> str:
    url = url.strip().rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"url: expected http://HOST:PORT or https://..., got {url!r}")
    return url


def headers_for(api_key: str | None, extra: Mapping[str, str] | None) -> dict[str, str]:
    """Headers of every request: the key (given, else ``MODELAPI_API_KEY``), the user agent, ``extra``."""
    from .. import __version__

    key = api_key if api_key is not None else api_key_from_environment()
    headers = {"user-agent": f"modelapi-client/{__version__} httpx/{httpx.__version__}"}
    if key:
        headers["authorization"] = f"Bearer {key}"
    return {**headers, **(extra or {})}


class Calls:
    """Every call of the client as ``Steps``; ``policy`` says how hard each request tries."""

    def __init__(self, policy: RetryPolicy, origin: str = "") -> None:
        self.policy = policy
        self.origin = origin

    # plumbing ---------------------------------------------------------------------------------------------
    def send(self, request: Request, *, retry: bool = True) -> Steps:
        """The answer to ``request`` (2xx or 3xx), else the error the server's answer describes. One request
        id for every attempt, so the server's log shows the retries of one call under one id."""
        request.headers.setdefault("x-request-id", uuid.uuid4().hex)
        response: httpx.Response = yield from exchange(request, self.policy, retry=retry, origin=self.origin)
        if response.status_code >= 400:
            raise error_for(response)
        return response

    def get_json(self, path: str) -> Steps:
        response = yield from self.send(Request("GET", path, {"accept": "application/json"}))
        return _json_of(response)

    # models -----------------------------------------------------------------------------------------------
    def models(self) -> Steps:
        body = yield from self.get_json("/models")
        return body["models"]

    def metadata(self, model: str, version: str | int | None = None) -> Steps:
        return (yield from self.get_json(model_path(model, version)))

    def ready(self, model: str | None = None, version: str | int | None = None) -> Steps:
        """One probe, not retried: ``True`` on 200, ``False`` on 503 (loading, draining)."""
        path = "/v2/health/ready" if model is None else _v2_path(model, version) + "/ready"
        request = Request("GET", path, {"accept": "application/json", "x-request-id": uuid.uuid4().hex})
        response: httpx.Response = yield from exchange(request, self.policy, retry=False, origin=self.origin)
        if response.status_code == 503:
            return False
        if response.status_code >= 400:
            raise error_for(response)
        return True

    # predictions ------------------------------------------------------------------------------------------
    def predict(self, model: str, data: Any, version: str | int | None = None) -> Steps:
        inputs = None
        if isinstance(data, np.ndarray):  # columns in the model's feature order, as its metadata lists them
            inputs = (yield from self.metadata(model, version))["inputs"]
        body = tables.records_of(data, inputs)
        path = model_path(model, version) + "/predict"
        response = yield from self.send(Request("POST", path, dict(JSON_HEADERS), dumps(body)))
        answer = _json_of(response)
        if isinstance(body, dict):
            return answer
        return tables.frame(answer["predictions"], data.index if tables.is_dataframe(data) else None)

    def infer(
        self,
        model: str,
        inputs: Mapping[str, Any] | np.ndarray,
        version: str | int | None = None,
        outputs: Sequence[str] | None = None,
        binary: bool | None = None,
    ) -> Steps:
        if not isinstance(inputs, Mapping):  # one array for a model of one input
            specs = (yield from self.get_json(_v2_path(model, version)))["inputs"]
            if len(specs) != 1:
                names = ", ".join(s["name"] for s in specs)
                raise ValueError(f"model '{model}' takes {len(specs)} inputs ({names}); pass a dict of them")
            inputs = {specs[0]["name"]: inputs}
        arrays = {name: tensors.as_array(name, value) for name, value in inputs.items()}
        body, headers = tensors.encode_request(arrays, outputs, binary)
        path = _v2_path(model, version) + "/infer"
        response = yield from self.send(Request("POST", path, headers, body))
        return tensors.decode_answer(response.content, response.headers.get(tensors.HEADER_LENGTH))

    # jobs -------------------------------------------------------------------------------------------------
    def submit_job(self, model: str, data: Any, idempotency_key: str | None = None) -> Steps:
        """Returns (the job as the server describes it, its URL path). The ``Idempotency-Key`` (one per call,
        the same on every retry) makes a repeated upload return the same job instead of a second one."""
        headers = {"idempotency-key": idempotency_key or uuid.uuid4().hex, "accept": "application/json"}
        path = f"{model_path(model)}/jobs"
        if isinstance(data, str | Path):
            file = Path(data)
            media = JOB_MEDIA.get(file.suffix.lower())
            if media is None:
                raise ValueError(f"{file}: expected a .csv, .json, .ndjson, .jsonl or .parquet file")
            if not file.is_file():
                raise FileNotFoundError(f"{file}: no such file")
            request = Request("POST", path, {**headers, "content-type": media}, file=file)
        elif tables.is_dataframe(data):
            sink = io.BytesIO()
            data.to_parquet(sink, index=False)  # Parquet keeps every column's type exactly
            request = Request("POST", path, {**headers, "content-type": JOB_MEDIA[".parquet"]}, sink.getvalue())
        else:
            body = tables.records_of(data)
            rows = [body] if isinstance(body, dict) else body
            request = Request("POST", path, {**headers, "content-type": "application/json"}, dumps(rows))
        response = yield from self.send(request)
        job = _json_of(response)
        return job, response.headers.get("location") or f"/jobs/{quote(job['id'], safe='')}"

    def job_status(self, location: str) -> Steps:
        return (yield from self.get_json(location))

    def cancel_job(self, location: str) -> Steps:
        response = yield from self.send(Request("DELETE", location, {"accept": "application/json"}))
        return _json_of(response)

    def job_result(self, location: str) -> Steps:
        request = Request("GET", f"{location}/result", {"accept": JOB_MEDIA[".parquet"]}, params={"format": "parquet"})
        response = yield from self.send(request)
        import pandas as pd

        return pd.read_parquet(io.BytesIO(response.content))

    def save_job_result(self, location: str, path: Path) -> Steps:
        """Stream the result into ``path``, in the format its suffix names."""
        fmt = JOB_FORMATS.get(path.suffix.lower())
        if fmt is None:
            raise ValueError(f"{path}: name a .csv, .json, .ndjson or .parquet file for the result")
        accept = {"accept": JOB_MEDIA[f".{fmt}"]}
        yield from self.send(Request("GET", f"{location}/result", accept, params={"format": fmt}, sink=path))
        return path

    def wait_job(
        self,
        location: str,
        *,
        timeout: float | None,
        on_status: Callable[[dict[str, Any]], None],
        poll: float = 0.1,
        max_poll: float = 1.0,
    ) -> Steps:
        """Poll until the job ends; its final description. Polls start at ``poll`` seconds apart and slow to
        ``max_poll``. A failed or cancelled job raises ``JobFailedError`` with the server's reason."""
        clock = self.policy.clock
        start = clock()
        while True:
            status = yield from self.job_status(location)
            on_status(status)
            if status["status"] in FINISHED:
                break
            if timeout is not None and clock() - start + poll > timeout:
                raise ClientTimeoutError(
                    f"job {status['id']} is still {status['status']} after {timeout:g} s; it keeps running on the "
                    "server: wait() again, or cancel() it"
                )
            yield Sleep(poll)
            poll = min(max_poll, poll * 1.5)
        if status["status"] != "succeeded":
            error = status.get("error") or {}
            reason = error.get("detail") or "no reason given"
            raise JobFailedError(f"job {status['id']} {status['status']}: {reason}", job=status)
        return status
