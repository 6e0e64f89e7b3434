"""Before timing: each server must answer each body exactly as the model does in process."""

from __future__ import annotations

import http.client
from typing import Any

import numpy as np
import orjson

from .workload import V2_DTYPES, Answer, Body


class WrongAnswer(RuntimeError):
    pass


#: what reading an answer of the wrong shape raises (orjson's and numpy's errors are ValueErrors; a JSON value
#: where an object was expected has no ``.get``)
_MALFORMED = (AttributeError, KeyError, TypeError, ValueError)


def post(
    host: str, port: int, path: str, body: Body, extra_headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection(host, port, timeout=30)
    try:
        conn.request("POST", path, body=body.data(), headers={**body.headers(), **(extra_headers or {})})
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def parse(kind: str, headers: dict[str, str], content: bytes) -> Answer:
    """Labels and probabilities from an answer of the friendly route, V2 JSON or V2 binary; ``WrongAnswer`` for
    an answer that is none of these or lacks them."""
    if kind == "rest":
        try:
            data = orjson.loads(content)
            preds: list[dict[str, Any]] = data.get("predictions", [data])
            labels = np.array([p["prediction"] for p in preds])
            proba = np.array([[p["probabilities"][k] for k in sorted(p["probabilities"], key=int)] for p in preds])
        except _MALFORMED as exc:
            raise WrongAnswer(
                f"not a friendly route's answer ({type(exc).__name__}: {exc}): {content[:300]!r}"
            ) from None
        return Answer(labels, proba)
    outputs = v2_outputs(headers, content, ("label", "probabilities"))
    return Answer(outputs["label"], outputs["probabilities"])


def v2_outputs(headers: dict[str, str], content: bytes, want: tuple[str, ...] = ()) -> dict[str, np.ndarray]:
    """The output tensors of a V2 answer, JSON or binary (Triton's binary tensor extension), by name.
    ``WrongAnswer`` for an answer that is no V2 answer or lacks one of the outputs named in ``want``."""
    try:
        length = int(headers.get("inference-header-content-length", len(content)))
        head = orjson.loads(content[:length])
        offset = length
        outputs: dict[str, np.ndarray] = {}
        for out in head["outputs"]:
            size = out.get("parameters", {}).get("binary_data_size")
            if size is None:
                arr = np.asarray(out["data"])
            else:
                arr = np.frombuffer(content[offset : offset + size], dtype=V2_DTYPES[out["datatype"]])
                offset += size
            outputs[out["name"]] = arr.reshape(out["shape"])
    except _MALFORMED as exc:
        raise WrongAnswer(f"not a V2 answer ({type(exc).__name__}: {exc}): {content[:300]!r}") from None
    missing = [name for name in want if name not in outputs]
    if missing:
        raise WrongAnswer(f"no output {missing[0]!r} in the answer (outputs: {sorted(outputs)})")
    return outputs


def check(
    name: str,
    url_path: str,
    host: str,
    port: int,
    body: Body,
    want: Answer,
    extra_headers: dict[str, str] | None = None,
) -> None:
    """Raise ``WrongAnswer`` unless the server's answer to ``body`` equals ``want``."""
    status, headers, content = post(host, port, url_path, body, extra_headers)
    where = f"{name} {url_path} ({body.kind}, {body.rows} rows)"
    if status != 200:
        raise WrongAnswer(f"{where}: HTTP {status}: {content[:300]!r}")
    if body.kind == "v2-binary" and "inference-header-content-length" not in headers:
        raise WrongAnswer(f"{where}: asked for binary outputs, got {headers.get('content-type')}")
    try:
        got = parse(body.kind, headers, content)
    except WrongAnswer as exc:
        raise WrongAnswer(f"{where}: {exc}") from None
    compare(where, got, want, body.rows)


def compare(where: str, got: Answer, want: Answer, n: int) -> None:
    """Raise ``WrongAnswer`` unless ``got`` is the first ``n`` rows of ``want``."""
    if got.labels.shape != (n,) or not np.array_equal(got.labels, want.labels[:n]):
        raise WrongAnswer(f"{where}: labels {got.labels.tolist()} != {want.labels[:n].tolist()}")
    if got.probabilities.shape != want.probabilities[:n].shape or not np.allclose(
        got.probabilities, want.probabilities[:n], rtol=1e-12, atol=1e-15
    ):
        raise WrongAnswer(f"{where}: probabilities differ from the in-process model's")
