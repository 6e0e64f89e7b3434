"""``modelapi monitor MODEL --html report.html``: one self-contained page (inline CSS and SVG, no script, no
external asset) with the drift table sorted by severity (the inputs marked sensitive named beside it, not in
it), one chart per feature (the reference's shares against the window's, over the reference's bins or
categories) and the prediction mix over time."""

from __future__ import annotations

import itertools
import time
from datetime import UTC, datetime
from html import escape
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from . import svg
from .reference import OTHER, categories, numbers
from .service import Monitor

_STYLE = """
body{font-family:system-ui,sans-serif;margin:24px;color:#222;max-width:1200px}
h1{font-size:22px} h2{font-size:17px;margin-top:28px} table{border-collapse:collapse;font-size:13px}
td,th{border:1px solid #ccc;padding:3px 8px;text-align:right} th{background:#f3f3f3}
td.l,th.l{text-align:left} .major{background:#f8d7da} .moderate{background:#fff3cd}
.charts{display:flex;flex-wrap:wrap;gap:12px} .chart{border:1px solid #ddd;background:#fff}
.note{color:#666;font-size:13px}
"""


def _when(ts: float | None) -> str:
    return "-" if ts is None else datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M UTC")


def _num(value: Any, fmt: str = "{:.3f}") -> str:
    return "-" if value is None else fmt.format(value)


def render(monitor: Monitor, model: str, since: float, now: float | None = None) -> str:
    now = time.time() if now is None else now
    status = monitor.status(model, since=since, now=now)
    reference, _ = monitor.reference(model)
    rows = monitor.store.read(model, since)
    out = [
        f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>{escape(model)}: drift report</title>",
        f"<style>{_STYLE}</style></head><body>",
        f"<h1>Model {escape(model)}: drift report</h1>",
        f"<p class='note'>Rows logged from {_when(since)} to {_when(now)}: {rows.num_rows}. Reference: "
        f"{escape(status['reference']['source'])}. Severity by PSI: moderate from "
        f"{status['thresholds']['psi_moderate']}, major from {status['thresholds']['psi_major']}; drifted: major "
        f"and the test's p-value below {status['thresholds']['p_value']}.</p>",
    ]
    out += _table(status)
    newest = _newest(status)
    if reference is not None and newest is not None:
        out += _features(reference, newest, status["versions"][newest]["since"], set(status["sensitive"]))
    out += _mix(rows, reference)
    out.append("</body></html>")
    return "\n".join(out)


def _newest(status: dict[str, Any]) -> str | None:
    with_rows = [v for v, w in status["versions"].items() if w["since"]["rows"]]
    return with_rows[-1] if with_rows else None


def _table(status: dict[str, Any]) -> list[str]:
    out = ["<h2>Drift by feature</h2>"]
    entries = []
    for version, windows in status["versions"].items():
        window = windows["since"]
        for f in window.get("features", []):
            entries.append((version, f))
        requests = window.get("requests") or {}
        if requests.get("total"):
            out.append(
                f"<p class='note'>Version {escape(version)}: {requests['total']} requests, "
                f"{requests['rejected']} rejected for their input ({requests['rejected_rate']:.1%}).</p>"
            )
    if status["sensitive"]:
        names = ", ".join(escape(name) for name in status["sensitive"])
        out.append(
            f"<p class='note' id='sensitive'>Not monitored: {names}, marked sensitive (model.toml's [monitor] "
            "sensitive), never logged.</p>"
        )
    for name, why in (status["reference"].get("collecting") or {}).items():
        out.append(f"<p class='note'>Not monitored yet: {escape(name)}, no reference: {escape(why)}.</p>")
    if not entries:
        out.append("<p class='note'>No drift to show: no reference yet, or no rows logged in the window.</p>")
        return out
    order = {"major": 0, "moderate": 1, "none": 2, "unknown": 3}
    entries.sort(key=lambda e: (order[e[1]["severity"]], -(e[1].get("psi") or 0.0)))
    out.append(
        "<table id='drift'><tr><th class='l'>version</th><th class='l'>feature</th><th class='l'>kind</th>"
        "<th>rows</th><th>PSI</th><th class='l'>test</th><th>statistic</th><th>p-value</th><th>missing</th>"
        "<th class='l'>severity</th><th class='l'>drifted</th></tr>"
    )
    for version, f in entries:
        out.append(
            f"<tr class='{f['severity']}'><td class='l'>{escape(version)}</td><td class='l'>{escape(f['feature'])}</td>"
            f"<td class='l'>{f['kind']}</td><td>{f['rows']}</td><td>{_num(f.get('psi'))}</td>"
            f"<td class='l'>{f.get('test', '-')}</td><td>{_num(f.get('statistic'))}</td>"
            f"<td>{_num(f.get('p_value'), '{:.2g}')}</td><td>{_num(f.get('missing'), '{:.1%}')}</td>"
            f"<td class='l'>{f['severity']}</td><td class='l'>{'yes' if f['drifted'] else 'no'}</td></tr>"
        )
    out.append("</table>")
    return out


def _bin_labels(edges: list[float]) -> list[str]:
    if not edges:
        return ["all"]
    labels = [f"<{edges[0]:.3g}"]
    labels += [f"[{a:.3g}, {b:.3g})" for a, b in itertools.pairwise(edges)]
    return [*labels, f">={edges[-1]:.3g}"]


def _features(reference: dict[str, Any], version: str, window: dict[str, Any], sensitive: set[str]) -> list[str]:
    out = [f"<h2>Features: reference against version {escape(version)}'s rows in the window</h2><div class='charts'>"]
    by_name = {f["feature"]: f for f in window.get("features", [])}
    for name, summary in reference["features"].items():
        if name in sensitive:  # never logged: nothing to draw against the reference
            continue
        got = by_name.get(name, {})
        title = f"{name}: PSI {_num(got.get('psi'), '{:.2f}')} ({got.get('severity', 'unknown')})"
        if summary["kind"] == "number" and "counts" in summary:
            expected = np.asarray(summary["counts"], dtype=float)
            ref = (expected / max(expected.sum(), 1)).tolist()
            recent = got.get("shares") or [0.0] * len(ref)
            labels = _bin_labels(summary["edges"])
        else:
            counts = summary.get("counts") or {}
            total = max(sum(counts.values()), 1)
            shares = got.get("shares") or {}
            labels = list(counts)[:12]
            ref = [counts[k] / total for k in labels]
            recent = [float(shares.get(k, 0.0)) for k in labels]
        out.append(svg.bars(title, labels, [("reference", ref, svg.REFERENCE), ("recent", recent, svg.RECENT)]))
    out.append("</div>")
    return out


def _mix(rows: pa.Table, reference: dict[str, Any] | None) -> list[str]:
    out = ["<h2>Prediction mix over time</h2>"]
    prediction: dict[str, Any] | None = None if reference is None else reference.get("prediction")
    column = None if prediction is None else "output." + prediction["output"]
    if prediction is None or column is None or column not in rows.column_names or not rows.num_rows:
        out.append("<p class='note'>No predictions logged in the window (or no reference to name the output).</p>")
        return out
    times = pc.cast(rows["time"], pa.int64()).to_numpy(zero_copy_only=False) / 1e6
    span = float(times.max() - times.min())
    size = 3600 if span <= 2 * 86400 else 86400
    slots = (times // size).astype(np.int64)
    keys = sorted(set(slots.tolist()))
    fmt = "%m-%d %H:00" if size == 3600 else "%Y-%m-%d"
    buckets = [datetime.fromtimestamp(k * size, UTC).strftime(fmt) for k in keys]
    if prediction["kind"] == "number":
        values = numbers(rows[column])
        means = [float(np.nanmean(values[slots == k])) if np.isfinite(values[slots == k]).any() else None for k in keys]
        out.append(svg.line(f"mean {prediction['output']} per {'hour' if size == 3600 else 'day'}", buckets, means))
        return out
    labels = categories(rows[column]).astype(str)
    top = [k for k in (prediction.get("counts") or {}) if k != OTHER][:8]
    shares: dict[str, list[float]] = {name: [] for name in [*top, OTHER]}
    for k in keys:
        mine = labels[slots == k]
        for name in top:
            shares[name].append(float(np.mean(mine == name)) if mine.size else 0.0)
        shares[OTHER].append(float(np.mean(~np.isin(mine, top))) if mine.size else 0.0)
    if not any(shares[OTHER]):
        del shares[OTHER]
    out.append(svg.stacked(f"{prediction['output']} per {'hour' if size == 3600 else 'day'}", buckets, shares))
    return out
