"""The small parts behind receipts: PDF amounts, folder storage, SMTP URLs and log-in, and
the refusal of S3 storage."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from azora_payments.config import ConfigError
from azora_payments.mail import Delivery, Mailer, parse_smtp_url
from azora_payments.pdf import ReceiptDocument, RefundLine, pdf_amount, render_receipt
from azora_payments.storage import FolderStorage, receipt_key, storage_for
from tests.conftest import make_settings
from tests.receipts.conftest import pdf_text


def test_amounts_fall_back_to_the_code_where_the_font_has_no_symbol() -> None:
    assert pdf_amount(2000, "usd") == "$20.00"
    assert pdf_amount(2000, "gbp") == "£20.00"
    assert pdf_amount(500, "jpy") == "¥500"
    assert pdf_amount(2000, "eur") == "EUR 20.00"
    assert pdf_amount(150000, "inr") == "INR 1,500.00"
    assert pdf_amount(5000, "krw") == "KRW 5,000"
    assert pdf_amount(1500, "bhd") == "BHD 1.500"


def test_the_pdf_shows_pending_refunds_and_survives_odd_text() -> None:
    doc = ReceiptDocument(
        number="R-2026-000042",
        issued_at=datetime(2026, 3, 1, tzinfo=UTC),
        merchant_name="Café ₩ Shop",
        merchant_address="",
        customer_email=None,
        description=None,
        amount=10000,
        currency="krw",
        card_brand=None,
        card_last4=None,
        refunds=(
            RefundLine(amount=2000, created_at=datetime(2026, 3, 2, tzinfo=UTC), status="pending"),
        ),
    )
    text = pdf_text(render_receipt(doc))
    assert "Café ? Shop" in text
    assert "R-2026-000042" in text
    assert "(pending)" in text
    assert "Net amount KRW 8,000" in text
    assert "Paid with" not in text
    assert "Billed to" not in text


async def test_folder_storage_writes_atomically_and_stays_inside(tmp_path: Path) -> None:
    storage = storage_for(str(tmp_path))
    assert isinstance(storage, FolderStorage)
    key = receipt_key(2026, "R-2026-000001")
    assert key == "receipts/2026/R-2026-000001.pdf"
    await storage.put(key, b"%PDF-1")
    await storage.put(key, b"%PDF-2")
    assert await storage.get(key) == b"%PDF-2"
    assert await storage.get("receipts/2026/none.pdf") is None
    assert [p.name for p in (tmp_path / "receipts/2026").iterdir()] == ["R-2026-000001.pdf"]
    with pytest.raises(ValueError, match="leaves"):
        await storage.get("../escape.pdf")
    assert storage_for("  ") is None


def test_smtp_urls() -> None:
    plain = parse_smtp_url("smtp://mailer:p%40ss@mail.example:2525")
    assert (plain.host, plain.port, plain.implicit_tls) == ("mail.example", 2525, False)
    assert (plain.username, plain.password) == ("mailer", "p@ss")
    tls = parse_smtp_url("smtps://mail.example")
    assert (tls.port, tls.implicit_tls, tls.username) == (465, True, None)
    assert parse_smtp_url("smtp://mail.example").port == 587
    with pytest.raises(ValueError, match="SMTP_URL"):
        parse_smtp_url("http://mail.example")
    assert Mailer(smtp_url=None, outbox_dir=None).delivery is Delivery.NOWHERE


def test_s3_storage_is_refused_in_one_line(sqlite_database_url: str) -> None:
    with pytest.raises(ConfigError, match=r"^RECEIPT_STORAGE: s3:// storage is not supported"):
        make_settings(sqlite_database_url, receipt_storage="s3://bucket/receipts")
