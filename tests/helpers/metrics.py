"""Reading the exposition text back: {(sample name, labels): value}."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: bytes | str) -> Samples:
    body = text.decode() if isinstance(text, bytes) else text
    out: Samples = {}
    for family in text_string_to_metric_families(body):
        for sample in family.samples:
            out[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return out


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def matching(samples: Samples, name: str, **labels: str) -> dict[frozenset[tuple[str, str]], float]:
    """Every sample called ``name`` whose labels include ``labels``."""
    want = set(labels.items())
    return {key: v for (n, key), v in samples.items() if n == name and want <= key}


def types(text: bytes | str) -> dict[str, str]:
    body = text.decode() if isinstance(text, bytes) else text
    return {family.name: family.type for family in text_string_to_metric_families(body)}
