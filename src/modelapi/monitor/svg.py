"""Inline SVG charts for the report: plain strings, no library, no external asset (docs/monitoring.md)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from html import escape

REFERENCE, RECENT = "#8c9bab", "#d9534f"
PALETTE = ("#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7", "#9c755f")
W, H, PAD_L, PAD_B, PAD_T = 560, 250, 44, 76, 24


def _text(x: float, y: float, s: str, *, anchor: str = "middle", size: int = 10, rotate: bool = False) -> str:
    turn = f' transform="rotate(-35 {x:.1f} {y:.1f})"' if rotate else ""
    return f'<text x="{x:.1f}" y="{y:.1f}" font-size="{size}" text-anchor="{anchor}"{turn}>{escape(s)}</text>'


def _frame(title: str, top: float, body: list[str], legend: Sequence[tuple[str, str]], bottom: float = 0.0) -> str:
    plot_h = H - PAD_B - PAD_T
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" width="{W}" height="{H}" viewBox="0 0 {W} {H}" '
        f'role="img" aria-label="{escape(title)}">',
        _text(PAD_L, 14, title, anchor="start", size=12),
        f'<line x1="{PAD_L}" y1="{PAD_T + plot_h}" x2="{W - 8}" y2="{PAD_T + plot_h}" stroke="#333"/>',
        f'<line x1="{PAD_L}" y1="{PAD_T}" x2="{PAD_L}" y2="{PAD_T + plot_h}" stroke="#333"/>',
        _text(PAD_L - 4, PAD_T + 4, f"{top:.2g}", anchor="end"),
        _text(PAD_L - 4, PAD_T + plot_h, f"{bottom:.3g}", anchor="end"),
    ]
    x: float = W - 8
    for name, color in reversed(legend):
        x -= 8 + 7 * len(name)
        parts.append(f'<rect x="{x:.1f}" y="5" width="10" height="10" fill="{color}"/>')
        parts.append(_text(x + 13, 14, name, anchor="start"))
        x -= 16
    return "".join([*parts, *body, "</svg>"])


def bars(title: str, labels: Sequence[str], series: Sequence[tuple[str, Sequence[float], str]]) -> str:
    """Grouped bars: one group per label, one bar per series (name, values, colour)."""
    top = max([max(values, default=0.0) for _, values, _ in series] + [1e-9])
    plot_w, plot_h = W - PAD_L - 12, H - PAD_B - PAD_T
    group = plot_w / max(len(labels), 1)
    bar = group * 0.8 / max(len(series), 1)
    body = []
    for i, label in enumerate(labels):
        x0 = PAD_L + i * group + group * 0.1
        for j, (name, values, color) in enumerate(series):
            v = values[i] if i < len(values) else 0.0
            h = plot_h * v / top
            body.append(
                f'<rect x="{x0 + j * bar:.1f}" y="{PAD_T + plot_h - h:.1f}" width="{max(bar - 1, 1):.1f}" '
                f'height="{h:.1f}" fill="{color}"><title>{escape(name)} {escape(label)}: {v:.3f}</title></rect>'
            )
        body.append(_text(x0 + group * 0.4, PAD_T + plot_h + 12, label, anchor="end", size=9, rotate=True))
    return _frame(title, top, body, [(name, color) for name, _, color in series])


def stacked(title: str, buckets: Sequence[str], shares: Mapping[str, Sequence[float]]) -> str:
    """One stacked bar per time bucket: each class's share of the predictions in it."""
    plot_w, plot_h = W - PAD_L - 12, H - PAD_B - PAD_T
    step = plot_w / max(len(buckets), 1)
    body = []
    colors = {name: PALETTE[i % len(PALETTE)] for i, name in enumerate(shares)}
    every = max(1, len(buckets) // 12)
    for i, bucket in enumerate(buckets):
        y: float = PAD_T + plot_h
        for name, values in shares.items():
            h = plot_h * values[i]
            y -= h
            body.append(
                f'<rect x="{PAD_L + i * step + 1:.1f}" y="{y:.1f}" width="{max(step - 2, 1):.1f}" height="{h:.1f}" '
                f'fill="{colors[name]}"><title>{escape(bucket)} {escape(name)}: {values[i]:.1%}</title></rect>'
            )
        if i % every == 0:
            body.append(_text(PAD_L + (i + 0.5) * step, PAD_T + plot_h + 12, bucket, anchor="end", size=9, rotate=True))
    return _frame(title, 1.0, body, list(colors.items()))


def line(title: str, buckets: Sequence[str], values: Sequence[float | None], color: str = PALETTE[0]) -> str:
    """One value per time bucket (the mean prediction), joined by a line."""
    known = [v for v in values if v is not None]
    lo, hi = (min(known), max(known)) if known else (0.0, 1.0)
    span = (hi - lo) or 1.0
    plot_w, plot_h = W - PAD_L - 12, H - PAD_B - PAD_T
    step = plot_w / max(len(buckets), 1)
    points = [
        f"{PAD_L + (i + 0.5) * step:.1f},{PAD_T + plot_h - plot_h * (v - lo) / span:.1f}"
        for i, v in enumerate(values)
        if v is not None
    ]
    body = [f'<polyline fill="none" stroke="{color}" stroke-width="2" points="{" ".join(points)}"/>']
    every = max(1, len(buckets) // 12)
    body += [
        _text(PAD_L + (i + 0.5) * step, PAD_T + plot_h + 12, b, anchor="end", size=9, rotate=True)
        for i, b in enumerate(buckets)
        if i % every == 0
    ]
    return _frame(title, hi, body, [("mean", color)], bottom=lo)
