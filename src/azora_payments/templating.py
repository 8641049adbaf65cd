"""The one way this service renders its HTML pages (the console, the checkout page)."""

from __future__ import annotations

from pathlib import Path

import jinja2


def html_templates(folder: Path) -> jinja2.Environment:
    """The templates in `folder`, escaped, and failing on a name the page does not pass: a
    missing value is a bug to see, not an empty string to ship."""
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(folder),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
