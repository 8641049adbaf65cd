"""The overview's chart as SVG: its hour labels stay inside the picture."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from azora_payments.console.charts import hourly_bars

# A generous width for one 14-unit character (the sans-serif digits are ~0.55 em).
CHAR_WIDTH = 14 * 0.6


def test_every_hour_label_lies_inside_the_viewbox() -> None:
    """25 hours (the last 24 and the current one) put a label on the last bar, at the right
    edge: drawn centred there, half of it fell outside (clipped on a phone)."""
    start = datetime(2026, 12, 1, 16, tzinfo=UTC) - timedelta(hours=24)
    hours = [(start + timedelta(hours=n), n % 3, n % 2) for n in range(25)]
    svg = str(hourly_bars(hours, width=600))
    labels = re.findall(r'<text x="([\d.]+)" y="[\d.]+" text-anchor="(\w+)"[^>]*>(\d\d:00)<', svg)
    assert len(labels) == 5, labels
    for x, anchor, text in labels:
        width = len(text) * CHAR_WIDTH
        left = {"start": 0.0, "middle": width / 2, "end": width}[anchor]
        assert float(x) - left >= 0, (text, x, anchor)
        assert float(x) - left + width <= 600, (text, x, anchor)
