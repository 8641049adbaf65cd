"""The small parts behind receipts: the PDF's rows, folder storage, SMTP URLs and log-in, S3
URLs, locale and time zone settings."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from azora_payments.config import ConfigError
from azora_payments.domain.receipt_content import ReceiptDocument, RefundLine
from azora_payments.mail import Delivery, Mailer, parse_smtp_url
from azora_payments.pdf import render_receipt
from azora_payments.storage import (
    FolderStorage,
    S3Location,
    StorageUnavailable,
    parse_s3_url,
    storage_for,
    version_key,
)
from tests.conftest import make_settings
from tests.receipts.conftest import pdf_text


def test_the_pdf_shows_pending_refunds_and_leaves_out_what_is_unknown() -> None:
    doc = ReceiptDocument(
        receipt_id="rcpt_1",
        number="R-2026-000042",
        issued_at=datetime(2026, 3, 1, tzinfo=UTC),
        merchant_name="Café ₩ Shop",
        merchant_address="",
        merchant_contact="",
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
    assert "Café ₩ Shop" in text
    assert "R-2026-000042" in text
    assert "(pending)" in text
    assert "Net paid ₩8,000" in text
    assert "PARTIALLY REFUNDED" in text
    assert "Payment method" not in text
    assert "Billed to" not in text


async def test_folder_storage_writes_atomically_and_stays_inside(tmp_path: Path) -> None:
    storage = storage_for(str(tmp_path))
    assert isinstance(storage, FolderStorage)
    await storage.check()
    key = version_key(2026, "R-2026-000001", 1)
    assert key == "receipts/2026/R-2026-000001/v1.pdf"
    await storage.put(key, b"%PDF-1")
    await storage.put(key, b"%PDF-2")
    assert await storage.get(key) == b"%PDF-2"
    assert await storage.get("receipts/2026/none.pdf") is None
    assert [p.name for p in (tmp_path / "receipts/2026/R-2026-000001").iterdir()] == ["v1.pdf"]
    with pytest.raises(ValueError, match="leaves"):
        await storage.get("../escape.pdf")
    assert storage_for("  ") is None
    (tmp_path / "file").write_text("")
    with pytest.raises(StorageUnavailable, match="cannot create folder"):
        await FolderStorage(tmp_path / "file" / "below").check()


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


def test_s3_urls_and_malformed_ones_refused_in_one_line(sqlite_database_url: str) -> None:
    assert parse_s3_url("s3://bucket/receipts/eu/") == S3Location("bucket", "receipts/eu")
    assert parse_s3_url("s3://bucket") == S3Location("bucket", "")
    settings = make_settings(sqlite_database_url, receipt_storage="s3://bucket/receipts")
    assert settings.receipt_storage == "s3://bucket/receipts"
    with pytest.raises(ConfigError, match=r"^RECEIPT_STORAGE: an S3 store is s3://bucket"):
        make_settings(sqlite_database_url, receipt_storage="s3:///no-bucket")


def test_locale_and_time_zone_are_checked(sqlite_database_url: str) -> None:
    settings = make_settings(
        sqlite_database_url, receipt_locale="fr-CA", receipt_timezone="Asia/Tokyo"
    )
    assert (settings.receipt_locale, settings.receipt_timezone) == ("fr-CA", "Asia/Tokyo")
    with pytest.raises(ConfigError, match=r"^RECEIPT_LOCALE: 'xx_YY' is not a CLDR locale"):
        make_settings(sqlite_database_url, receipt_locale="xx_YY")
    with pytest.raises(ConfigError, match=r"^RECEIPT_TIMEZONE: 'Mars/Olympus' is not a time zone"):
        make_settings(sqlite_database_url, receipt_timezone="Mars/Olympus")
