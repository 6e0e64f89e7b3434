"""How long a full garbage collection stops a worker, before and after ``gc.freeze()`` (docs/overload.md).

    python -m bench.gc_pause

Trains the bench's logistic regression, builds the app on it as ``modelapi serve`` would, answers one request
(models loaded, routes warm), then times full collections with the heap as it is and after freezing it.
"""

from __future__ import annotations

import gc
import tempfile
import time
from pathlib import Path

from starlette.testclient import TestClient

from modelapi import Settings, create_app

from . import workload


def collections(n: int = 3) -> list[float]:
    out = []
    for _ in range(n):
        started = time.perf_counter()
        gc.collect()
        out.append((time.perf_counter() - started) * 1000)
    return out


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="modelapi-gc-") as tmp:
        work = workload.build(Path(tmp), (1,))
        app = create_app(None, Settings(models=[str(work.model_path)]))
        with TestClient(app) as client:
            body = work.body("rest", 1)
            assert client.post("/models/logreg/predict", content=body.data(), headers=body.headers()).is_success
            time.sleep(1.0)  # the server freezes the heap half a second after the model loaded: let it, then
            gc.unfreeze()  # measure without the freeze first
            print(f"objects tracked: {len(gc.get_objects()):,}")
            print("full collection, heap as it is (ms):", ", ".join(f"{ms:.1f}" for ms in collections()))
            gc.freeze()
            print("full collection, after gc.freeze() (ms):", ", ".join(f"{ms:.3f}" for ms in collections()))


if __name__ == "__main__":
    main()
