"""The receipt page itself: every script and currency sign printed as written (read back with
pypdf, and with ink on the page where the text is, through poppler's pdftoppm), the fonts a page
is given, the same bytes for the same receipt, and the e-mail saying what the PDF says."""

from __future__ import annotations

import html
import io
import logging
import os
import shutil
import subprocess
from dataclasses import replace
from datetime import UTC, datetime

import pytest
from pypdf import PdfReader

from azora_payments.domain.receipt_content import RefundLine, RefundMark, content_of
from azora_payments.mail import receipt_message, refund_message
from azora_payments.pdf import fonts_for, needs_shaping, render_receipt
from tests.receipts.conftest import pdf_text
from tests.receipts.sample import SAMPLE

REQUIRE_PACKAGES = os.environ.get("AZORA_REQUIRE_PACKAGES") == "1"

SCRIPTS = {
    "latin": (
        "àáâãäåæçèéêëìíîïñòóôõöøùúûüýÿ ŒœŠšŽžŸ ĀāĂăĄąĆćČčĎďĐđĒēĘęĚěĞğĪīİıŁłŃńŇňŐőŘřŚśŞşŢţŤť"
        "ŪūŮůŰűŹźŻż ẞß Tiếng Việt"
    ),
    "greek": "Καλημέρα κόσμε",
    "cyrillic": "Съешь же ещё этих мягких булок",
    "arabic": "مرحبا بالعالم",
    "hebrew": "שלום עולם",
    "devanagari": "नमस्ते दुनिया",
    "thai": "สวัสดีชาวโลก",
    "chinese": "你好世界 東京",
    "japanese": "こんにちは カタカナ",
    "korean": "안녕하세요 세계",
    "signs": "€ £ ¥ ₹ ₩ ₺ ₽ ₪ ₫ ₦ ₱ ₴ ₸ ₼ ₾ ₿ ¢ ₡ ₲ ₵ ₭ ₮ $",
}
REFUND = RefundLine(amount=500, created_at=datetime(2026, 12, 3, 9, tzinfo=UTC), status="succeeded")


def _pdftoppm() -> str:
    found = shutil.which("pdftoppm")
    if found is None:
        if REQUIRE_PACKAGES:
            pytest.fail("pdftoppm (poppler-utils) is required (AZORA_REQUIRE_PACKAGES=1)")
        pytest.skip("pdftoppm (Debian's poppler-utils) is not installed: page images not checked")
    return found


def _ink(pdf: bytes) -> int:
    """Dark pixels on the first page at 100 dpi (pdftoppm's greyscale PGM)."""
    out = subprocess.run(
        [_pdftoppm(), "-gray", "-r", "100", "-f", "1", "-l", "1"],
        input=pdf,
        capture_output=True,
        check=True,
    ).stdout
    magic, size, _, data = out.split(b"\n", 3)
    width, height = map(int, size.split())
    assert magic == b"P5"
    assert len(data) == width * height
    return sum(1 for value in data if value < 128)


@pytest.mark.parametrize("script", SCRIPTS)
def test_every_script_and_sign_prints_as_written(
    script: str, caplog: pytest.LogCaptureFixture
) -> None:
    text = SCRIPTS[script]
    caplog.set_level(logging.WARNING, logger="fpdf")
    pdf = render_receipt(replace(SAMPLE, description=text))
    read = "".join(page.extract_text() for page in PdfReader(io.BytesIO(pdf)).pages)
    assert [c for c in text if not c.isspace() and c not in read] == []
    assert f"{text[:3]}" in read  # in order, not as "?" or scattered
    # fpdf2 says so when a font lacks a glyph (it would print an empty box).
    assert not [r for r in caplog.records if "missing" in r.getMessage()]


@pytest.mark.parametrize("script", SCRIPTS)
def test_the_page_has_ink_where_the_text_is(script: str) -> None:
    text = SCRIPTS[script]
    characters = sum(1 for c in text if not c.isspace())
    without = _ink(render_receipt(replace(SAMPLE, description="x")))
    added = _ink(render_receipt(replace(SAMPLE, description=text))) - without
    # A glyph at 10.5 pt and 100 dpi darkens some 8 to 45 pixels; a font that drew nothing
    # would add none.
    assert added >= 5 * characters, (script, added)


def test_every_script_at_once_with_a_refund() -> None:
    everything = " · ".join(SCRIPTS.values())
    pdf = render_receipt(replace(SAMPLE, description=everything, refunds=(REFUND,)))
    read = pdf_text(pdf)
    assert [c for c in everything if not c.isspace() and c not in read] == []
    for expected in ("PARTIALLY REFUNDED", "Refund, December 3, 2026", "-€5.00", "Net paid €20.00"):
        assert expected in read, expected
    assert _ink(pdf) > 0


def test_a_page_gets_only_the_fonts_its_text_needs() -> None:
    def names(*texts: str) -> list[str]:
        return [f"{f.path.stem}" for f in fonts_for(list(texts))]

    core = ["NotoSans-Regular-core", "NotoSans-Bold-core"]
    assert names("Annual plan €25.00 ₹ ₩ ₫ £ ¥ — “x”") == core
    assert names("Łódź", "Ελληνικά") == [*core, "NotoSans-Regular", "NotoSans-Bold"]
    assert names("مرحبا", "x") == [*core, "NotoSansArabic-Regular", "NotoSansArabic-Bold"]
    # 東 (U+6771) and 京 (U+4EAC) live in two slices of the CJK face; 東 and 本 share one.
    assert names("東京")[2:] == ["DroidSansFallback-027", "DroidSansFallback-033"]
    assert len(names("東本")) == 3


def test_the_same_receipt_renders_to_the_same_bytes() -> None:
    first = render_receipt(SAMPLE)
    assert render_receipt(SAMPLE) == first
    assert b"/CreationDate (D:20261201100500Z" in first
    refunded = render_receipt(replace(SAMPLE, refunds=(REFUND,)))
    assert refunded != first
    # The /ID's first half stays with the receipt; the second changes with what it shows.
    ids = [PdfReader(io.BytesIO(data)).trailer["/ID"] for data in (first, refunded)]
    assert ids[0][0] == ids[1][0]
    assert ids[0][1] != ids[1][1]


def test_only_complex_scripts_are_shaped() -> None:
    assert not needs_shaping("Café crème — ₹ test 東京 Ελληνικά Привет 안녕")
    for script in ("arabic", "hebrew", "devanagari", "thai"):
        assert needs_shaping(SCRIPTS[script]), script
    assert needs_shaping("e\u0301")  # a combining accent NFC could not fold


def test_fonts_read_once_per_thread_give_fpdf2s_own_bytes() -> None:
    doc = replace(SAMPLE, description=" ".join(SCRIPTS.values()), refunds=(REFUND,))
    assert render_receipt(doc, cached_fonts=True) == render_receipt(doc, cached_fonts=False)


def test_locale_and_time_zone_reach_the_page() -> None:
    late = datetime(2026, 12, 1, 23, 30, tzinfo=UTC)
    doc = replace(SAMPLE, issued_at=late, locale="fr", timezone="Europe/Paris")
    text = pdf_text(render_receipt(doc))
    assert "25,00\u00a0€" in text or "25,00 €" in text
    assert "2 décembre 2026" in text  # already the next day in Paris


def test_refund_marks() -> None:
    assert content_of(SAMPLE).mark is None
    assert content_of(replace(SAMPLE, refunds=(REFUND,))).mark is RefundMark.PARTIALLY_REFUNDED
    full = RefundLine(amount=2500, created_at=REFUND.created_at, status="succeeded")
    assert content_of(replace(SAMPLE, refunds=(full,))).mark is RefundMark.REFUNDED
    failed = RefundLine(amount=2500, created_at=REFUND.created_at, status="failed")
    assert content_of(replace(SAMPLE, refunds=(failed,))).mark is None


def test_the_email_says_what_the_pdf_says() -> None:
    doc = replace(SAMPLE, refunds=(REFUND,), merchant_name="Café <b>Shop</b>")
    content = content_of(doc)
    pdf = render_receipt(doc)
    message = receipt_message(
        sender="receipts@shop.example",
        sender_name="Café Shop",
        recipient="buyer@shop.example",
        number=doc.number,
        content=content,
        lang="en",
        message_id="<rcpt_sample.issued@shop.example>",
        pdf=pdf,
    )
    text_part = message.get_body(preferencelist=("plain",))
    html_part = message.get_body(preferencelist=("html",))
    assert text_part is not None
    assert html_part is not None
    page, body, plain = pdf_text(pdf), html_part.get_content(), text_part.get_content()
    assert "<b>Shop</b>" not in body  # escaped
    for value in content.texts():
        if value:
            assert value in page.replace("\n", " ") or value.upper() in page, value
            assert html.escape(value) in body or html.escape(value.upper()) in body, value
            assert value in plain or value.upper() in plain, value
    [attachment] = list(message.iter_attachments())
    assert attachment.get_content() == pdf


def test_the_refund_email_carries_the_receipt_as_it_now_stands() -> None:
    doc = replace(SAMPLE, refunds=(REFUND,))
    message = refund_message(
        sender="receipts@shop.example",
        sender_name="Shop",
        recipient="buyer@shop.example",
        amount_text="€5.00",
        description="Annual plan",
        receipt_number=doc.number,
        content=content_of(doc),
        lang="en",
        message_id="<rf_1.refunded@shop.example>",
        pdf=render_receipt(doc),
    )
    html_part = message.get_body(preferencelist=("html",))
    assert html_part is not None
    assert "Shop has refunded €5.00 for Annual plan (receipt R-2026-000042)" in (
        html_part.get_content()
    )
    assert "PARTIALLY REFUNDED" in html_part.get_content()
    [attachment] = list(message.iter_attachments())
    assert "Net paid €20.00" in pdf_text(attachment.get_content())
    bare = refund_message(
        sender="receipts@shop.example",
        sender_name="Shop",
        recipient="buyer@shop.example",
        amount_text="€5.00",
        description=None,
        receipt_number=None,
        content=None,
        lang="en",
        message_id="<rf_2.refunded@shop.example>",
        pdf=None,
    )
    assert list(bare.iter_attachments()) == []
    assert "for your payment." in bare.get_body(preferencelist=("plain",)).get_content()  # type: ignore[union-attr]
