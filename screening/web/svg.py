"""Hand-written SVG charts for the printable report (pure functions: numbers in, markup out).

The console draws its charts in the browser (static/charts.js); the report is rendered on the
server so that it prints, and converts to PDF, without running a script.
"""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

PALETTE = ("#1f6feb", "#d97706", "#059669", "#b42318", "#7c3aed", "#0e7490")


def _fmt_pct(v: float) -> str:
    return f"{v * 100:.1f}".removesuffix(".0") + "%"


def line_chart(
    labels: Sequence[str],
    series: Sequence[tuple[str, Sequence[float | None]]],
    *,
    width: int = 900,
    height: int = 240,
    y_min: float = 0.0,
) -> str:
    """Rates (0..1) over ``labels``; a None breaks the line (no parcel that day)."""
    left, right, top, bottom = 48, 12, 30, 28
    w, h = width - left - right, height - top - bottom
    n = max(len(labels), 1)
    span = 1.0 - y_min or 1.0

    def x(i: int) -> float:
        return left + (w * i / (n - 1) if n > 1 else w / 2)

    def y(v: float) -> float:
        return top + h * (1.0 - (max(v, y_min) - y_min) / span)

    out = [
        f'<svg class="chart" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" '
        f'width="{width}" height="{height}" role="img">'
    ]
    for k in range(5):
        v = y_min + span * k / 4
        out.append(
            f'<line x1="{left}" x2="{width - right}" y1="{y(v):.1f}" y2="{y(v):.1f}" '
            'stroke="#e5e7eb"/>'
            f'<text x="{left - 6}" y="{y(v) + 4:.1f}" text-anchor="end" font-size="10" '
            f'fill="#6b7280">{_fmt_pct(v)}</text>'
        )
    step = max(1, n // 10)
    for i, label in enumerate(labels):
        if i % step == 0:
            out.append(
                f'<text x="{x(i):.1f}" y="{height - 8}" text-anchor="middle" font-size="10" '
                f'fill="#6b7280">{escape(label)}</text>'
            )
    for s, (name, values) in enumerate(series):
        colour = PALETTE[s % len(PALETTE)]
        runs: list[list[str]] = [[]]
        for i, value in enumerate(values):
            if value is None:
                runs.append([])
                continue
            runs[-1].append(f"{x(i):.1f},{y(value):.1f}")
            out.append(
                f'<circle cx="{x(i):.1f}" cy="{y(value):.1f}" r="2.5" fill="{colour}">'
                f"<title>{escape(name)} {escape(labels[i])}: {_fmt_pct(value)}</title></circle>"
            )
        for run in runs:
            if len(run) > 1:
                out.append(
                    f'<polyline fill="none" stroke="{colour}" stroke-width="2" '
                    f'points="{" ".join(run)}"/>'
                )
    for s, (name, _) in enumerate(series):
        lx = left + 8 + s * 150
        out.append(
            f'<rect x="{lx}" y="6" width="10" height="10" '
            f'fill="{PALETTE[s % len(PALETTE)]}"/>'
            f'<text x="{lx + 14}" y="15" font-size="11" fill="#111827">'
            f"{escape(name)}</text>"
        )
    out.append("</svg>")
    return "".join(out)


def bar_chart(
    items: Sequence[tuple[str, float]], *, width: int = 900, bar: int = 20, unit: str = ""
) -> str:
    """Horizontal bars, one per (label, value), scaled to the largest value."""
    left, right = 200, 60
    height = max(bar + 8, len(items) * (bar + 8) + 8)
    top = max((v for _, v in items), default=0.0) or 1.0
    out = [
        f'<svg class="chart" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" '
        f'width="{width}" height="{height}" role="img">'
    ]
    for i, (label, value) in enumerate(items):
        y = 4 + i * (bar + 8)
        length = (width - left - right) * value / top
        out.append(
            f'<text x="{left - 8}" y="{y + bar * 0.7:.1f}" text-anchor="end" font-size="12" '
            f'fill="#111827">{escape(label)}</text>'
            f'<rect class="bar" x="{left}" y="{y}" width="{length:.1f}" height="{bar}" '
            f'fill="{PALETTE[0]}"/>'
            f'<text x="{left + length + 6:.1f}" y="{y + bar * 0.7:.1f}" font-size="12" '
            f'fill="#111827">{value:g}{escape(unit)}</text>'
        )
    out.append("</svg>")
    return "".join(out)


def heatmap(
    rows: Sequence[tuple[str, Sequence[int]]], columns: Sequence[str], *, cell: int = 18
) -> str:
    """Counts per (row, column), darker for more: X-ray machines by day."""
    left, top = 120, 18
    width = left + cell * len(columns) + 8
    height = top + cell * len(rows) + 4
    peak = max((v for _, values in rows for v in values), default=0) or 1
    out = [
        f'<svg class="chart" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" '
        f'width="{width}" height="{height}" role="img">'
    ]
    for j, label in enumerate(columns):
        out.append(
            f'<text x="{left + j * cell + cell / 2:.1f}" y="{top - 5}" text-anchor="middle" '
            f'font-size="9" fill="#6b7280">{escape(label)}</text>'
        )
    for i, (name, values) in enumerate(rows):
        y = top + i * cell
        out.append(
            f'<text x="{left - 6}" y="{y + cell * 0.7:.1f}" text-anchor="end" font-size="11" '
            f'fill="#111827">{escape(name)}</text>'
        )
        for j, v in enumerate(values):
            alpha = 0.0 if v == 0 else 0.15 + 0.85 * v / peak
            out.append(
                f'<rect x="{left + j * cell}" y="{y}" width="{cell - 2}" height="{cell - 2}" '
                f'fill="#1f6feb" fill-opacity="{alpha:.2f}" stroke="#e5e7eb">'
                f"<title>{escape(name)} {escape(columns[j])}: {v}</title></rect>"
            )
    out.append("</svg>")
    return "".join(out)
