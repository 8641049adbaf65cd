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
# Half the width of an "HH:00" label at font-size 14 (five digits of ~0.6 em), rounded up.
LABEL_HALF = 22


def hourly_bars(
    hours: Sequence[tuple[datetime, int, int]], *, width: int = 600, height: int = 210
) -> Markup:
    """Payments per hour, succeeded and failed stacked, one bar per hour."""
    # Sized so that its 14-unit labels stay readable when a phone shrinks it to ~340 px.
    left, right, top, bottom = 40, 8, 12, 30
    plot_w, plot_h = width - left - right, height - top - bottom
    peak = max([s + f for _, s, f in hours] + [1])
    scale = plot_h / _nice(peak)
    step = plot_w / max(len(hours), 1)
    bar = max(step * 0.7, 1.0)
    total_s = sum(s for _, s, _ in hours)
    total_f = sum(f for _, _, f in hours)
    parts = [
        f'<svg class="chart" viewBox="0 0 {width} {height}" role="img" '
        f'aria-labelledby="chart-title" '
        f'xmlns="http://www.w3.org/2000/svg">',
        f'<title id="chart-title">Payments per hour over the last 24 hours: {total_s} '
        f"succeeded, {total_f} failed</title>",
    ]
    ceiling = _nice(peak)
    # Whole payments only: a ceiling of 1 gets no half-way line labelled "0".
    ticks = (0, 0.5, 1) if ceiling % 2 == 0 else (0, 1)
    for tick in ticks:
        y = top + plot_h - tick * ceiling * scale
        label = round(tick * ceiling)
        parts.append(
            f'<line x1="{left}" x2="{width - right}" y1="{y:.1f}" y2="{y:.1f}" '
            f'stroke="{AXIS}" stroke-width="0.5" stroke-dasharray="3 3"/>'
        )
        parts.append(
            f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end" font-size="14" '
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
            # The current hour's label sits on the right edge: centred there, half of it
            # would fall outside the picture, so it ends at the edge instead.
            centre = x + bar / 2
            at, anchor = (centre, "middle") if centre + LABEL_HALF <= width else (width, "end")
            parts.append(
                f'<text x="{at:.1f}" y="{height - 8}" text-anchor="{anchor}" '
                f'font-size="14" fill="{TEXT}">{hour:%H}:00</text>'
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
