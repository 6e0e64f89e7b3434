"""Triton's statistics extension: ``GET /v2/models[/{name}[/versions/{version}]]/stats``.

The numbers are read from the same aggregated metric values ``GET /metrics`` shows (``metrics.collect()``),
so every worker answers with every worker's totals, lagging by at most a second for the workers that did not
answer (docs/observability.md). What modelapi does not measure separately reads 0: ``compute_input`` and
``compute_output`` (decoding and encoding are part of ``success``), the response cache, ``batch_stats``
(the batch-size histogram has power-of-two buckets, not exact sizes) and ``memory_usage``.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from typing import Any

from ... import metrics
from ...errors import ModelNotFound
from ...repository.registry import Repository
from ...security.principal import Principal

Key = tuple[str, str]

#: sample name -> the field it adds to (summed over protocols and, for requests, kept per status class)
_FIELDS = {
    "modelapi_rows_inferred_total": "rows",
    "modelapi_batches_total": "batches",
    "modelapi_request_success_seconds_total": "success_s",
    "modelapi_request_duration_seconds_sum": "duration_s",
    "modelapi_request_queue_seconds_count": "queue_n",
    "modelapi_request_queue_seconds_sum": "queue_s",
    "modelapi_request_compute_seconds_count": "compute_n",
    "modelapi_request_compute_seconds_sum": "compute_s",
    "modelapi_last_request_timestamp_seconds": "last",
}


def totals() -> dict[Key, dict[str, float]]:
    """{(model, version): {field: value}} over every worker, from the metric values."""
    out: dict[Key, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for family in metrics.collect():
        for sample in family.samples:
            labels = sample.labels
            if "model" not in labels or "version" not in labels:
                continue
            key = (labels["model"], labels["version"])
            if sample.name == "modelapi_requests_total":
                field = "ok" if labels.get("code") == "2xx" else "failed"
                out[key][field] += sample.value
            elif sample.name in _FIELDS:
                field = _FIELDS[sample.name]
                if field == "last":
                    out[key][field] = max(out[key][field], sample.value)
                else:
                    out[key][field] += sample.value
    return out


def _duration(count: float, seconds: float) -> dict[str, int]:
    return {"count": int(count), "ns": max(0, round(seconds * 1e9))}


def model_stat(name: str, version: str, t: dict[str, float]) -> dict[str, Any]:
    ok = t.get("ok", 0.0)
    success_s = t.get("success_s", 0.0)
    return {
        "name": name,
        "version": version,
        "last_inference": int(t.get("last", 0.0) * 1000),
        "inference_count": int(t.get("rows", 0.0)),
        # a model without a batcher runs each answered request on its own
        "execution_count": int(t.get("batches", 0.0) or ok),
        "inference_stats": {
            "success": _duration(ok, success_s),
            "fail": _duration(t.get("failed", 0.0), t.get("duration_s", 0.0) - success_s),
            "queue": _duration(t.get("queue_n", 0.0), t.get("queue_s", 0.0)),
            "compute_input": _duration(ok, 0.0),
            "compute_infer": _duration(t.get("compute_n", 0.0), t.get("compute_s", 0.0)),
            "compute_output": _duration(ok, 0.0),
            "cache_hit": _duration(0, 0.0),
            "cache_miss": _duration(0, 0.0),
        },
        "batch_stats": [],
        "memory_usage": [],
    }


def _versions(repository: Repository, name: str, known: Iterable[Key]) -> list[str]:
    """The versions the repository knows of the model, then any other that has counts (retired since)."""
    versions = repository.entry(name).versions()
    return versions + sorted({v for m, v in known if m == name} - set(versions))


def statistics(
    repository: Repository, principal: Principal | None, name: str | None = None, version: str | None = None
) -> dict[str, Any]:
    """The ``$stats_model_response`` body: every model the key may use, or one model, or one version."""
    found = totals()
    if name is None:
        names = [n for n in repository.names() if principal is None or principal.can_use(n)]
    else:
        repository.entry(name, principal)  # 404 for a model unknown or not the key's
        names = [name]
    stats = []
    for model in names:
        versions = _versions(repository, model, found)
        if version is not None:
            if version not in versions:
                raise ModelNotFound(f"model '{model}' has no version '{version}'; its versions: {', '.join(versions)}")
            versions = [version]
        stats += [model_stat(model, v, found.get((model, v), {})) for v in versions]
    return {"model_stats": stats}
