"""Per-request costs of the pieces of the request path, in-process (no HTTP): decode, validate, encode.

.venv/bin/python scripts/microbench_path.py
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from typing import Any

import orjson

sys.path.insert(0, os.path.dirname(__file__))
from measure_dispatch import FEATURES, LogReg

from modelapi.batching import batch_key, concat, split
from modelapi.inference import InferenceResponse
from modelapi.protocols.records import codec as records
from modelapi.protocols.v2 import codec as v2


def timed(name: str, fn: Callable[[], Any], n: int = 3000) -> None:
    for _ in range(n // 10):
        fn()
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        for _ in range(n):
            fn()
        best = min(best, (time.perf_counter() - start) / n)
    print(f"{name:28s}{best * 1e6:9.1f} us")


def main() -> None:
    model = LogReg()
    model.load()
    sig = model.signature
    body = orjson.dumps({f: 0.1 * i for i, f in enumerate(FEATURES)})
    doc = orjson.loads(body)
    request, _ = records.decode(doc, sig)
    inputs = sig.validate(request.inputs)
    answer = InferenceResponse("logreg", "1", dict(model.predict(inputs)))
    v2_body = orjson.dumps({"inputs": [{"name": f, "datatype": "FP64", "shape": [1], "data": [0.5]} for f in FEATURES]})
    codec = v2.codec_for(model)
    timed("orjson.loads", lambda: orjson.loads(body))
    timed("records.decode", lambda: records.decode(doc, sig, max_rows=100_000))
    timed("signature.validate", lambda: sig.validate(request.inputs, max_rows=100_000))
    timed("batch_key", lambda: batch_key("1", None, {}, ()))
    timed("concat 16 requests", lambda: concat([inputs] * 16))
    big = dict(model.predict(concat([inputs] * 16)))
    timed("split 16 requests", lambda: split(big, [1] * 16))
    timed("predict 1 row", lambda: model.predict(inputs), 500)
    timed("predict 16 rows", lambda: model.predict(concat([inputs] * 16)), 500)
    timed("records.encode + dumps", lambda: orjson.dumps(records.encode(answer, sig, single=True)))
    timed("v2 decode", lambda: codec.decode(v2_body))
    timed("v2 encode", lambda: codec.encode(answer))


if __name__ == "__main__":
    main()
