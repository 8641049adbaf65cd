"""Receipt PDFs: an A4 page drawn with fpdf2 from a `ReceiptContent`, in any script.

The fonts ship in `azora_payments/fonts` (see its README): a core cut of Noto Sans (ASCII,
Latin-1, punctuation, currency signs), the whole Noto Sans (Latin, Greek, Cyrillic), Noto Sans
Arabic, Hebrew, Devanagari and Thai, then Droid Sans Fallback for Chinese, Japanese and Korean,
tried in that order for each character (fpdf2's fallback fonts). Text in a script that needs it
(Hebrew, Arabic, Devanagari, Thai, combining marks) is shaped with HarfBuzz, right to left where
it is written so; the rest is drawn glyph by glyph, without Latin kerning, at a tenth of the
cost.

fpdf2 reads and subsets every font it is given for every document, so a page is given only the
fonts its text needs, the Latin face's common part comes cut small, and the CJK face in slices
of 512 code points. Reading a font's metrics and character map costs more than drawing the
page, so each thread reads each font once and gives every document a copy with its own subset
and its own handle on the file (fpdf2 subsets that handle in place when it writes the PDF); a
test checks that this gives the same bytes as fpdf2's own `add_font`.

The same document renders to the same bytes: the creation date is the receipt's issue time and
the PDF's /ID comes from the receipt id and what the page shows.
"""

from __future__ import annotations

import copy
import hashlib
import io
import json
import re
import threading
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path

from fontTools.ttLib import TTFont
from fpdf import FPDF
from fpdf.enums import Align, XPos, YPos
from fpdf.fonts import SubsetMap, TTFFont

from azora_payments.domain.receipt_content import (
    MARK_COLOURS,
    ReceiptContent,
    ReceiptDocument,
    Row,
    content_of,
)

__all__ = ["fonts_for", "needs_shaping", "render_receipt"]

# Scripts whose letters change shape or order with their neighbours: Hebrew, Arabic (and its
# presentation forms), Devanagari, Thai, and combining marks. Other text is drawn glyph by
# glyph, which costs a tenth of shaping it (it loses only Latin kerning).
_SHAPED = re.compile(
    "[\u0300-\u036f\u0590-\u08ff\u0900-\u097f\u0e00-\u0e7f\ua8e0-\ua8ff\ufb1d-\ufdff\ufe70-\ufeff]"
)


def needs_shaping(text: str) -> bool:
    return _SHAPED.search(text) is not None


MAIN = "core"
PRODUCER = "Azora Payments"

# Colours (RGB): ink, muted ink, rules, the details panel; the e-mail's template uses the same.
INK = (26, 31, 54)
MUTED = (105, 115, 134)
RULE = (227, 232, 238)
PANEL = (246, 248, 250)


def _rgb(colour: str) -> tuple[int, int, int]:
    value = int(colour.removeprefix("#"), 16)
    return value >> 16, (value >> 8) & 0xFF, value & 0xFF


@dataclass(frozen=True, slots=True)
class FontFile:
    family: str
    style: str
    path: Path


@cache
def _font_dir() -> Path:
    return Path(str(resources.files("azora_payments") / "fonts"))


@cache
def _manifest() -> dict[str, object]:
    data: dict[str, object] = json.loads((_font_dir() / "fonts.json").read_text())
    return data


@cache
def _coverage(path: Path) -> frozenset[int]:
    with TTFont(path, lazy=True) as font:
        return frozenset(font.getBestCmap())


# Tables fpdf2 drops from every embedded subset; fontTools still decodes them while subsetting
# unless they are gone first. HarfBuzz shapes with the whole file, read from its path.
_NOT_EMBEDDED = ("GSUB", "GPOS", "GDEF")


@cache
def _embeddable_bytes(path: Path) -> bytes:
    """The font without the tables fpdf2 would drop anyway: the same glyphs, ids and names, so
    the same subset, made faster."""
    with TTFont(path, recalcTimestamp=False) as font:
        for tag in _NOT_EMBEDDED:
            if tag in font:
                del font[tag]
        out = io.BytesIO()
        font.save(out)
    return out.getvalue()


def _faces() -> list[str]:
    faces = _manifest()["faces"]
    assert isinstance(faces, list)
    return [str(face) for face in faces]


@cache
def _cjk_slices() -> tuple[int, frozenset[str]]:
    cjk = _manifest()["cjk"]
    assert isinstance(cjk, dict)
    return int(cjk["slice_bits"]), frozenset(str(s) for s in cjk["slices"])


def fonts_for(texts: list[str]) -> list[FontFile]:
    """The font files that print `texts`, in fallback order: the core cut of Noto Sans (both
    weights) always, then each face or CJK slice only when some character needs it."""
    chars = {ord(c) for text in texts for c in text if not c.isspace()}
    root = _font_dir()
    core = str(_manifest()["core"])
    chosen = [FontFile(MAIN, "", root / core.format(style="Regular"))]
    chosen.append(FontFile(MAIN, "B", root / core.format(style="Bold")))
    missing = chars - _coverage(chosen[0].path)
    for face in _faces():
        if not missing:
            break
        regular = root / f"{face}-Regular.ttf"
        covered = missing & _coverage(regular)
        if covered:
            chosen.append(FontFile(face, "", regular))
            chosen.append(FontFile(face, "B", root / f"{face}-Bold.ttf"))
            missing -= covered
    bits, slices = _cjk_slices()
    for number in sorted({cp >> bits for cp in missing}):
        name = f"{number:03x}"
        if name in slices:
            path = root / "cjk" / f"DroidSansFallback-{name}.ttf"
            chosen.append(FontFile(f"cjk{name}", "", path))
    return chosen


_thread = threading.local()


def _prototype(font: FontFile) -> TTFFont:
    """This thread's parsed copy of a font (HarfBuzz's font object is not safe to share
    between threads: fpdf2 sets its size before each shaping)."""
    cache: dict[FontFile, TTFFont] | None = getattr(_thread, "fonts", None)
    if cache is None:
        cache = _thread.fonts = {}
        _thread.reader = FPDF()
    proto = cache.get(font)
    if proto is None:
        fontkey = f"{font.family.lower()}{font.style}"
        proto = cache[font] = TTFFont(_thread.reader, font.path, fontkey, font.style)
        # Read what the prototype needs; each document gets its own handle below.
        proto.ttfont.close()
    return proto


def _add_font(pdf: FPDF, font: FontFile, *, cached: bool = True) -> None:
    if not cached:
        pdf.add_font(font.family, font.style, font.path)
        return
    proto = _prototype(font)
    # Shared with the prototype: what was read from the file and never changes (widths, glyph
    # ids, character map, descriptor). Fresh: the file handle fpdf2 subsets, and the subset.
    clone = copy.copy(proto)
    clone.i = len(pdf.fonts) + 1
    clone.ttfont = TTFont(
        io.BytesIO(_embeddable_bytes(font.path)), recalcTimestamp=False, lazy=True
    )
    clone.missing_glyphs = []
    clone.biggest_size_pt = 0
    clone.subset = SubsetMap(clone)
    pdf.fonts[proto.fontkey] = clone


class _ReceiptPDF(FPDF):
    def __init__(self, *, permanent_id: str, content_id: str) -> None:
        super().__init__(format="A4", unit="mm")
        self._ids = (permanent_id, content_id)

    def file_id(self) -> str:
        # PDF 1.7, 14.4: the first string stays with the document, the second changes with it.
        digests = (hashlib.md5(i.encode(), usedforsecurity=False).hexdigest() for i in self._ids)
        return "".join(f"<{digest}>" for digest in digests)


def render_receipt(doc: ReceiptDocument, *, cached_fonts: bool = True) -> bytes:
    content = content_of(doc)
    pdf = _ReceiptPDF(permanent_id=doc.receipt_id, content_id=doc.fingerprint())
    pdf.set_creation_date(doc.issued_at)
    pdf.set_producer(PRODUCER)
    pdf.set_creator(PRODUCER)
    pdf.set_title(content.title)
    pdf.set_author(content.merchant_name)
    pdf.set_lang(doc.locale.replace("_", "-"))
    fonts = fonts_for(content.texts())
    for font in fonts:
        _add_font(pdf, font, cached=cached_fonts)
    pdf.set_fallback_fonts(
        list(dict.fromkeys(f.family for f in fonts if f.family != MAIN)), exact_match=False
    )
    pdf.set_auto_page_break(auto=True, margin=18)
    pdf.set_margins(20, 18, 20)
    pdf.add_page()
    _draw(pdf, content)
    try:
        return bytes(pdf.output())
    finally:
        for used in pdf.fonts.values():
            if isinstance(used, TTFFont):
                used.ttfont.close()


def _draw(pdf: FPDF, content: ReceiptContent) -> None:
    width = pdf.epw
    left = pdf.l_margin

    def shape(value: str) -> str:
        pdf.set_text_shaping(needs_shaping(value))
        return value

    def text(
        value: str, *, size: float, style: str = "", colour: tuple[int, int, int] = INK,
        height: float | None = None, align: Align = Align.L, w: float | None = None,
    ) -> None:  # fmt: skip
        pdf.set_font(MAIN, style=style, size=size)
        pdf.set_text_color(*colour)
        pdf.multi_cell(
            w or width, height or size * 0.5, shape(value), align=align,
            new_x=XPos.LMARGIN, new_y=YPos.NEXT,
        )  # fmt: skip

    def rule(gap: float = 3) -> None:
        pdf.ln(gap)
        pdf.set_draw_color(*RULE)
        pdf.set_line_width(0.3)
        pdf.line(left, pdf.get_y(), left + width, pdf.get_y())
        pdf.ln(gap)

    def rows(items: tuple[Row, ...], *, size: float = 10.5) -> None:
        for row in items:
            style = "B" if row.strong else ""
            colour = MUTED if row.muted else INK
            y = pdf.get_y()
            pdf.set_font(MAIN, style=style, size=size)
            pdf.set_text_color(*colour)
            label = shape(row.label)
            pdf.multi_cell(width * 0.7, 6.5, label, new_x=XPos.LMARGIN, new_y=YPos.NEXT)
            end = pdf.get_y()
            pdf.set_xy(left + width * 0.7, y)
            pdf.multi_cell(
                width * 0.3,
                6.5,
                shape(row.value),
                align=Align.R,
                new_x=XPos.LMARGIN,
                new_y=YPos.NEXT,
            )
            pdf.set_y(max(end, pdf.get_y()) + 1)

    # The merchant, and who to ask.
    text(content.merchant_name, size=18, style="B", height=9)
    for line in content.merchant_lines:
        text(line, size=9.5, colour=MUTED, height=4.8)
    pdf.ln(8)

    # What was paid, and how much of it came back.
    text(content.title, size=11, colour=MUTED, height=6)
    text(content.amount_paid, size=26, style="B", height=12)
    text(f"Paid {content.paid_on}", size=10, colour=MUTED, height=5.5)
    if content.mark is not None:
        fill, ink = (_rgb(colour) for colour in MARK_COLOURS[content.mark])
        pdf.ln(2.5)
        pdf.set_font(MAIN, style="B", size=9.5)
        label = shape(content.mark.value.upper())
        w = pdf.get_string_width(label) + 8
        pdf.set_fill_color(*fill)
        pdf.set_text_color(*ink)
        pdf.set_draw_color(*fill)
        # Lined up with the text above it, which starts one cell margin in.
        pdf.set_x(left + pdf.c_margin)
        x = pdf.get_x()
        pdf.rect(x, pdf.get_y(), w, 7, style="F", round_corners=True, corner_radius=1.8)
        pdf.cell(w, 7, label, align=Align.C, new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    pdf.ln(7)

    # Receipt number, dates, card, customer: a panel of label over value.
    top = pdf.get_y()
    columns = len(content.details)
    col = width / columns
    pdf.set_fill_color(*PANEL)
    pdf.rect(left, top, width, 17, style="F", round_corners=True, corner_radius=2)
    bottom = top + 17.0
    for index, row in enumerate(content.details):
        x = left + 4 + index * col
        pdf.set_xy(x, top + 3)
        pdf.set_font(MAIN, style="B", size=7.5)
        pdf.set_text_color(*MUTED)
        pdf.cell(col - 6, 4, shape(row.label.upper()), new_x=XPos.LEFT, new_y=YPos.NEXT)
        pdf.set_x(x)
        pdf.set_font(MAIN, size=9.5)
        pdf.set_text_color(*INK)
        pdf.multi_cell(col - 6, 5, shape(row.value), new_x=XPos.LEFT, new_y=YPos.NEXT)
        bottom = max(bottom, pdf.get_y() + 3)
    pdf.set_xy(left, bottom + 8)

    # The line bought, then the summary.
    text("SUMMARY", size=8, style="B", colour=MUTED, height=5)
    rule(1.5)
    rows(content.lines)
    rule(1.5)
    rows(content.summary)
    rule(1.5)
    pdf.ln(6)
    text(content.footer, size=9, colour=MUTED, height=5)
