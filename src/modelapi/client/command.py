"""``modelapi predict --model iris --url URL sepal_length=5.1 ...``: one record, answered in the terminal.

The fields are ``NAME=VALUE`` arguments; each value is parsed by the model's signature (its metadata, asked
for first) with the rules the server uses for ``GET /predict?feature=value`` (``records/query.parse_text``);
an array-shaped input takes a JSON list. A value that does not parse is sent as the text it is, so the
server's own message names the field and what it expects. Without ``--url`` the model runs in this process,
through the same client over the app in memory (``httpx.ASGITransport``).
"""

from __future__ import annotations

import asyncio
import json
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TextIO

import httpx

from ..protocols.records.query import parse_text
from ..settings import Settings
from ..signature import TensorSpec
from .aio import AsyncClient
from .errors import ClientError, HTTPStatusError

_BAR = 30


def split_fields(args: Sequence[str]) -> dict[str, str]:
    """``["a=1", "b=x"]`` -> ``{"a": "1", "b": "x"}``; raises ValueError for anything else."""
    fields: dict[str, str] = {}
    for arg in args:
        name, sep, value = arg.partition("=")
        if not sep or not name:
            raise ValueError(f"expected NAME=VALUE for one record's field, got {arg!r}")
        if name in fields:
            raise ValueError(f"field {name!r} given twice")
        fields[name] = value
    return fields


def parse_fields(fields: Mapping[str, str], inputs: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Text values -> JSON values by the model's inputs (V2 metadata); unknown names pass through as text."""
    specs = {s["name"]: s for s in inputs}
    record: dict[str, Any] = {}
    for name, text in fields.items():
        spec = specs.get(name)
        if spec is None:
            record[name] = text  # the server answers with the names it expects
        elif len(spec.get("shape", [-1])) > 1:
            try:
                record[name] = json.loads(text)
            except ValueError:
                record[name] = text
        else:
            record[name] = parse_text(TensorSpec(name, spec["datatype"]), text)
    return record


def render(answer: Mapping[str, Any]) -> str:
    """A friendly answer for a person: the prediction, then each class's probability with a bar."""
    lines: list[str] = []
    for key, value in answer.items():
        if isinstance(value, Mapping) and all(isinstance(v, int | float) or v is None for v in value.values()):
            lines.append(f"{key}:")
            width = max((len(str(label)) for label in value), default=0)
            for label, p in value.items():
                share = 0.0 if p is None else float(p)
                bar = "#" * round(max(0.0, min(1.0, share)) * _BAR)
                shown = "null" if p is None else f"{share:.3f}"
                lines.append(f"  {label!s:<{width}}  {shown:>6}  {bar}".rstrip())
        else:
            lines.append(f"{key}: {json.dumps(value) if not isinstance(value, str) else value}")
    return "\n".join(lines) + "\n"


async def _one(client: AsyncClient, model: str, fields: Mapping[str, str]) -> Any:
    inputs = (await client.metadata(model))["inputs"]
    return await client.predict(model, parse_fields(fields, inputs))


def predict_record(
    settings: Settings,
    model: str,
    args: Sequence[str],
    *,
    url: str | None,
    api_key: str | None,
    as_json: bool,
    out: TextIO,
    err: TextIO,
) -> int:
    """The one-record ``predict``; returns the exit status (1 when the server refused, with its message)."""
    try:
        fields = split_fields(args)
        if not fields:
            raise ValueError("give the record's fields as NAME=VALUE arguments, or --input and --output files")
        answer = asyncio.run(_remote(url, api_key, model, fields) if url else _in_process(settings, model, fields))
    except HTTPStatusError as exc:
        rid = f", request id {exc.request_id}" if exc.request_id else ""
        print(f"modelapi: error: {exc.message} (HTTP {exc.status}{rid})", file=err)
        return 1
    except ClientError as exc:
        print(f"modelapi: error: {exc.message}", file=err)
        return 1
    out.write(json.dumps(answer) + "\n" if as_json else render(answer))
    return 0


async def _remote(url: str, api_key: str | None, model: str, fields: Mapping[str, str]) -> Any:
    async with AsyncClient(url, api_key, retries=2, deadline=30.0) as client:
        return await _one(client, model, fields)


async def _in_process(settings: Settings, model: str, fields: Mapping[str, str]) -> Any:
    from ..http.app import create_app

    with tempfile.TemporaryDirectory(prefix="modelapi-predict-") as tmp:
        # no keys, no jobs, no metrics: an app of this command's own, reached only through memory
        local = settings.model_copy(
            update={
                "state_dir": Path(tmp),
                "database_url": None,  # not the server's database (keys, jobs, prediction log), as a file job
                "auth": "off",
                "job_workers": 0,
                "metrics": False,
                "redis_url": None,
            }
        )
        app = create_app(None, local)
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with AsyncClient("http://modelapi.local", transport=transport, retries=0) as client:
                return await _one(client, model, fields)
