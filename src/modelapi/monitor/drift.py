"""Drift of logged rows against the reference, per model version and feature.

Per feature and window: the population stability index over the reference's decile bins (numbers) or its
categories, and a two-sample test: Kolmogorov-Smirnov for numbers, against the reference's CDF as its 101
quantiles draw it (so the statistic is exact to about 0.01, and the p-value uses the reference's row count),
chi-square on the table of reference and window counts for categories. A feature has drifted when its PSI is at
least ``PSI_MAJOR`` and the test's p-value is below ``P_VALUE``: PSI alone is noisy on few rows, the test alone
flags shifts too small to matter on many. The same statistics on the primary output give the shift of the
prediction mix; the missing rate of each feature and the share of requests rejected (invalid input) come along.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .records import INPUT, OUTPUT
from .reference import OTHER, bin_counts, categories, numbers

PSI_MODERATE = 0.1
PSI_MAJOR = 0.25
P_VALUE = 0.01
MIN_ROWS = 30
_EPS = 1e-4


def psi(expected: np.ndarray, actual: np.ndarray) -> float:
    """Population stability index of two count vectors over the same bins."""
    e = np.maximum(expected / max(expected.sum(), 1), _EPS)
    a = np.maximum(actual / max(actual.sum(), 1), _EPS)
    return float(np.sum((a - e) * np.log(a / e)))


def _ks(reference: dict[str, Any], x: np.ndarray) -> tuple[float, float]:
    """KS statistic of sample ``x`` against the reference's quantile CDF, and its p-value."""
    q = np.asarray(reference["quantiles"])
    p = np.linspace(0.0, 1.0, q.size)
    # a right-continuous CDF through the quantiles: for repeated values, the largest share
    uq, last = np.unique(q[::-1], return_index=True)
    pq = p[::-1][last]
    xs = np.sort(x)
    cdf = np.interp(xs, uq, pq, left=0.0, right=1.0)
    m = xs.size
    hi = np.arange(1, m + 1) / m
    d = float(max(np.max(np.abs(hi - cdf)), np.max(np.abs(cdf - (hi - 1 / m)))))
    n = max(int(reference["rows"] * (1 - reference["missing"])), 1)
    en = n * m / (n + m)
    from scipy import stats  # here, not at import: scipy.stats takes ~0.7 s, and every worker imports this module

    return d, float(stats.kstwobign.sf(d * math.sqrt(en)))


def _number(reference: dict[str, Any], x: np.ndarray) -> dict[str, Any]:
    finite = x[np.isfinite(x)]
    out: dict[str, Any] = {"test": "ks", "mean": float(finite.mean()) if finite.size else None}
    if finite.size < MIN_ROWS or "quantiles" not in reference:
        return out
    expected = np.asarray(reference["counts"], dtype=float)
    actual = bin_counts(reference["edges"], finite).astype(float)
    d, p = _ks(reference, finite)
    out.update(psi=psi(expected, actual), statistic=d, p_value=p, shares=(actual / actual.sum()).tolist())
    return out


def _category(reference: dict[str, Any], values: np.ndarray) -> dict[str, Any]:
    present = values[values != None].astype(str)  # noqa: E711
    out: dict[str, Any] = {"test": "chi2"}
    if present.size < MIN_ROWS or not reference["counts"]:
        return out
    known = list(reference["counts"])
    names, counts = np.unique(present, return_counts=True)
    seen = dict(zip(names.tolist(), counts.tolist(), strict=True))
    labels = [*known, OTHER] if OTHER not in known else known
    actual = np.array(
        [seen.get(k, 0) for k in labels if k != OTHER]
        + [sum(c for k, c in seen.items() if k not in known or k == OTHER)],
        float,
    )
    expected = np.array(
        [reference["counts"].get(k, 0) for k in labels if k != OTHER] + [reference["counts"].get(OTHER, 0)], float
    )
    keep = (expected + actual) > 0
    table = np.vstack([expected[keep], actual[keep]])
    if table.shape[1] < 2:
        statistic, p = 0.0, 1.0
    else:
        from scipy import stats  # lazily, as in _ks

        result = stats.chi2_contingency(table)
        statistic, p = float(result.statistic), float(result.pvalue)
    out.update(
        psi=psi(expected, actual),
        statistic=statistic,
        p_value=p,
        shares={k: float(a / actual.sum()) for k, a in zip(labels, actual, strict=True) if a},
    )
    return out


def compare(reference: dict[str, Any], column: pa.ChunkedArray | None) -> dict[str, Any]:
    """One feature's drift in one window: rows, missing rate, PSI, test, statistic, p-value, severity."""
    if column is None or len(column) == 0:
        return {"rows": 0, "severity": "unknown", "drifted": False}
    if reference["kind"] == "number":
        values = numbers(column) if pa.types.is_floating(column.type) or pa.types.is_integer(column.type) else None
        if values is None:  # text where the reference has numbers: nothing to compare
            return {"rows": len(column), "severity": "unknown", "drifted": False}
        out = _number(reference, values)
        missing = float(np.mean(~np.isfinite(values)))
    else:
        text = categories(column)
        out = _category(reference, text)
        missing = float(np.mean(text == None))  # noqa: E711
    value = out.get("psi")
    out.update(rows=len(column), missing=missing, reference_missing=reference["missing"])
    out["severity"] = (
        "unknown"
        if value is None
        else "major"
        if value >= PSI_MAJOR
        else "moderate"
        if value >= PSI_MODERATE
        else "none"
    )
    out["drifted"] = value is not None and value >= PSI_MAJOR and out["p_value"] < P_VALUE
    return out


_ORDER = {"major": 0, "moderate": 1, "none": 2, "unknown": 3}


def window(
    reference: dict[str, Any] | None,
    rows: pa.Table,
    tallies: pa.Table | None,
    sensitive: frozenset[str] = frozenset(),
) -> dict[str, Any]:
    """The drift report of one window of one version's rows; inputs marked ``sensitive`` (never logged) are left
    out of its features (the status names them once, ``service.Monitor.status``)."""
    out: dict[str, Any] = {"rows": rows.num_rows}
    if rows.num_rows:
        times = pc.cast(rows["time"], pa.int64()).to_numpy(zero_copy_only=False) / 1e6
        out.update({"from": float(times.min()), "to": float(times.max())})
    if tallies is not None:
        requests = int(pc.sum(tallies["requests"]).as_py() or 0)
        rejected = int(pc.sum(tallies["rejected"]).as_py() or 0)
        out["requests"] = {
            "total": requests,
            "rejected": rejected,
            "rejected_rate": rejected / requests if requests else None,
        }
    if reference is None:
        return out
    features = []
    for name, summary in reference["features"].items():
        if name in sensitive:
            continue
        column = INPUT + name
        features.append(
            {
                "feature": name,
                "kind": summary["kind"],
                **compare(summary, rows[column] if column in rows.column_names else None),
            }
        )
    features.sort(key=lambda f: (_ORDER[f["severity"]], -(f.get("psi") or 0.0), f["feature"]))
    out["features"] = features
    out["drifted"] = [f["feature"] for f in features if f["drifted"]]
    prediction = reference.get("prediction")
    if prediction is not None:
        column = OUTPUT + prediction["output"]
        got = rows[column] if column in rows.column_names else None
        out["prediction"] = {"output": prediction["output"], "kind": prediction["kind"], **compare(prediction, got)}
    return out
