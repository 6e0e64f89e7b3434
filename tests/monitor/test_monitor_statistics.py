"""The drift statistics against what scipy computes from the raw samples: the reference keeps only a summary."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
from scipy import stats

from modelapi.monitor import drift
from modelapi.monitor.reference import summarize


def test_ks_against_the_quantile_summary_is_close_to_the_two_sample_test() -> None:
    rng = np.random.default_rng(11)
    reference = rng.normal(0.0, 1.0, 5000)
    summary = summarize(pa.array(reference))
    assert "quantiles" in summary and len(summary["quantiles"]) == 101 and sum(summary["counts"]) == 5000
    for shift in (0.0, 0.1, 0.5, 2.0):
        window = rng.normal(shift, 1.0, 800)
        got = drift.compare(summary, pa.chunked_array([window]))
        exact = stats.ks_2samp(reference, window)
        assert abs(got["statistic"] - exact.statistic) < 0.015, (shift, got["statistic"], exact.statistic)
        assert (got["p_value"] < 0.01) == (exact.pvalue < 0.01), (shift, got["p_value"], exact.pvalue)
    same = drift.compare(summary, pa.chunked_array([rng.normal(0.0, 1.0, 800)]))
    assert same["psi"] < 0.05 and not same["drifted"]


def test_categories_new_values_and_missing_ones() -> None:
    rng = np.random.default_rng(12)
    summary = summarize(pa.array(rng.choice(["a", "b", "c"], 3000).tolist()))
    assert summary["kind"] == "category" and set(summary["counts"]) == {"a", "b", "c"}
    steady = drift.compare(summary, pa.chunked_array([rng.choice(["a", "b", "c"], 600).tolist()]))
    assert steady["severity"] == "none" and steady["p_value"] > 0.01
    # a value never seen in the reference, and a tenth of the rows without any
    values = [*rng.choice(["a", "b", "z"], 540).tolist(), *[None] * 60]
    moved = drift.compare(summary, pa.chunked_array([values]))
    assert moved["drifted"] and moved["severity"] == "major"
    assert abs(moved["missing"] - 0.1) < 1e-9 and moved["shares"]["(other)"] > 0.25


def test_too_few_rows_give_no_verdict() -> None:
    summary = summarize(pa.array(np.arange(100.0)))
    got = drift.compare(summary, pa.chunked_array([np.arange(10.0) + 500]))
    assert got["severity"] == "unknown" and not got["drifted"] and got["rows"] == 10
