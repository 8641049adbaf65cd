"""Charts drawn by the service as inline SVG: no script, no outside asset, readable without
colour (a table beside each chart says the same)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from markupsafe import Markup, escape

SUCCEEDED = "#2f7d5b"
FAILED = "#c2463d"
AXIS = "#8a94a6"
TEXT = "#4a5568"


def hourly_bars(
    hours: Sequence[tuple[datetime, int, int]], *, width: int = 720, height: int = 220
) -> Markup:
    """Payments per hour, succeeded and failed stacked, one bar per hour."""
    left, right, top, bottom = 36, 8, 12, 28
    plot_w, plot_h = width - left - right, height - top - bottom
    peak = max([s + f for _, s, f in hours] + [1])
    scale = plot_h / _nice(peak)
    step = plot_w / max(len(hours), 1)
    bar = max(step * 0.7, 1.0)
    total_s = sum(s for _, s, _ in hours)
    total_f = sum(f for _, _, f in hours)
    parts = [
        f'<svg class="chart" viewBox="0 0 {width} {height}" role="img" '
        f'aria-labelledby="chart-title" preserveAspectRatio="none" '
        f'xmlns="http://www.w3.org/2000/svg">',
        f'<title id="chart-title">Payments per hour over the last 24 hours: {total_s} '
        f"succeeded, {total_f} failed</title>",
    ]
    for tick in (0, 0.5, 1):
        y = top + plot_h - tick * _nice(peak) * scale
        label = round(tick * _nice(peak))
        parts.append(
            f'<line x1="{left}" x2="{width - right}" y1="{y:.1f}" y2="{y:.1f}" '
            f'stroke="{AXIS}" stroke-width="0.5" stroke-dasharray="3 3"/>'
        )
        parts.append(
            f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end" font-size="11" '
            f'fill="{TEXT}">{label}</text>'
        )
    for n, (hour, ok, failed) in enumerate(hours):
        x = left + n * step + (step - bar) / 2
        ok_h, failed_h = ok * scale, failed * scale
        y_ok = top + plot_h - ok_h
        hint = escape(f"{hour:%H}:00 UTC: {ok} succeeded, {failed} failed")
        parts.append(f"<g><title>{hint}</title>")
        if ok:
            parts.append(
                f'<rect x="{x:.1f}" y="{y_ok:.1f}" width="{bar:.1f}" height="{ok_h:.1f}" '
                f'fill="{SUCCEEDED}"/>'
            )
        if failed:
            parts.append(
                f'<rect x="{x:.1f}" y="{y_ok - failed_h:.1f}" width="{bar:.1f}" '
                f'height="{failed_h:.1f}" fill="{FAILED}"/>'
            )
        parts.append("</g>")
        if n % 6 == 0:
            parts.append(
                f'<text x="{x + bar / 2:.1f}" y="{height - 8}" text-anchor="middle" '
                f'font-size="11" fill="{TEXT}">{hour:%H}:00</text>'
            )
    parts.append(
        f'<line x1="{left}" x2="{width - right}" y1="{top + plot_h}" y2="{top + plot_h}" '
        f'stroke="{AXIS}"/>'
    )
    parts.append("</svg>")
    return Markup("".join(parts))  # noqa: S704 - built from numbers and escaped text only


def _nice(value: int) -> int:
    """A round ceiling for the axis: 1, 2, 5, 10, 20, 50, …"""
    magnitude = 1
    while True:
        for factor in (1, 2, 5):
            if value <= factor * magnitude:
                return factor * magnitude
        magnitude *= 10
