"""A server-rendered SVG bar chart (no JavaScript, no CDN): records and duration per run over 60 days."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, timedelta

from markupsafe import Markup, escape


@dataclass(frozen=True)
class Point:
    day: date
    value: float
    failed: bool = False


def bar_chart(chart_id: str, title: str, unit: str, points: Sequence[Point], end: date, days: int = 60) -> Markup:
    """Return an accessible SVG with one bar per day (the day's total); failed days are drawn hatched."""
    width, height, left, bottom, top = 640, 180, 48, 24, 12
    plot_w, plot_h = width - left - 8, height - bottom - top
    start = end - timedelta(days=days - 1)
    per_day: dict[date, list[Point]] = {}
    for p in points:
        if start <= p.day <= end:
            per_day.setdefault(p.day, []).append(p)
    totals = {d: sum(p.value for p in ps) for d, ps in per_day.items()}
    peak = max(totals.values(), default=0) or 1
    bar_w = plot_w / days
    parts = [
        f'<svg class="chart" id="{escape(chart_id)}" viewBox="0 0 {width} {height}" role="img" '
        f'aria-labelledby="{escape(chart_id)}-title {escape(chart_id)}-desc" xmlns="http://www.w3.org/2000/svg">',
        f'<title id="{escape(chart_id)}-title">{escape(title)}</title>',
        f'<desc id="{escape(chart_id)}-desc">{len(per_day)} days with runs between {start:%d %B %Y} and '
        f'{end:%d %B %Y}; the highest day is {_fmt(peak)} {escape(unit)}. The same figures are in the table below.</desc>',
        f'<line x1="{left}" y1="{top + plot_h}" x2="{width - 8}" y2="{top + plot_h}" class="chart__axis"/>',
        f'<text x="{left - 6}" y="{top + 4}" class="chart__label" text-anchor="end">{_fmt(peak)}</text>',
        f'<text x="{left - 6}" y="{top + plot_h}" class="chart__label" text-anchor="end">0</text>',
        f'<text x="{left}" y="{height - 6}" class="chart__label">{start:%d %b}</text>',
        f'<text x="{width - 8}" y="{height - 6}" class="chart__label" text-anchor="end">{end:%d %b}</text>',
    ]
    for offset in range(days):
        d = start + timedelta(days=offset)
        if d not in totals:
            continue
        h = max(1.0, plot_h * totals[d] / peak)
        failed = any(p.failed for p in per_day[d])
        cls = "chart__bar chart__bar--failed" if failed else "chart__bar"
        parts.append(
            f'<rect class="{cls}" x="{left + offset * bar_w + 1:.1f}" y="{top + plot_h - h:.1f}" '
            f'width="{max(1.0, bar_w - 2):.1f}" height="{h:.1f}"/>'
        )
    parts.append("</svg>")
    return Markup("".join(parts))  # nosec B704: every text in it is escape()d; the rest are our numbers


def _fmt(value: float) -> str:
    return f"{value:,.0f}" if value >= 10 else f"{value:,.1f}".rstrip("0").rstrip(".")
