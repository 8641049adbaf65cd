"""The receipt e-mail: its parts, SMTP outages, the dev outbox, and nowhere to send."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from sqlalchemy import select, update

from azora_payments.config import Settings
from azora_payments.db.models import Job, Receipt
from azora_payments.db.types import utcnow
from azora_payments.domain import receipts
from azora_payments.services import Services
from tests.conftest import make_settings, open_services
from tests.receipts.conftest import SmtpServer, pdf_text, run_receipt_jobs, seed_succeeded


async def receipt_of(services: Services, payment_id: str) -> Receipt:
    async with services.db.read() as session:
        row = await session.scalar(select(Receipt).where(Receipt.payment_id == payment_id))
    assert row is not None
    return row


async def test_the_email_has_both_parts_and_the_pdf(
    receipt_services: Services, smtp: SmtpServer
) -> None:
    payment_id = await seed_succeeded(receipt_services, amount=123456, currency="jpy")
    await run_receipt_jobs(receipt_services)
    receipt = await receipt_of(receipt_services, payment_id)
    [message] = smtp.inbox.messages
    assert smtp.inbox.recipients == [["buyer@shop.example"]]
    assert receipt.number in message["Subject"]
    assert "receipts@shop.example" in message["From"]
    assert message["Message-ID"] == f"<{receipt.id}.issued@shop.example>"
    text = message.get_body(preferencelist=("plain",))
    html = message.get_body(preferencelist=("html",))
    assert text is not None
    assert html is not None
    assert receipt.number in text.get_content()
    assert "¥123,456" in text.get_content()
    assert "¥123,456" in html.get_content()
    assert "Mastercard •••• 4444" in html.get_content()
    [attachment] = list(message.iter_attachments())
    assert attachment.get_content_type() == "application/pdf"
    assert attachment.get_filename() == f"{receipt.number}.pdf"
    content = attachment.get_content()
    assert "¥123,456" in pdf_text(content)
    assert "Mastercard •••• 4444" in pdf_text(content)
    assert receipt.emailed_at is not None

    # Run again (a duplicate job, a retry): emailed_at says it went; nothing more is sent.
    async with receipt_services.db.transaction() as session:
        from azora_payments.jobs import enqueue

        await enqueue(session, kind=receipts.EMAIL, payload={"receipt_id": receipt.id})
    assert await run_receipt_jobs(receipt_services, receipts.EMAIL) == 1
    assert len(smtp.inbox.messages) == 1


async def test_an_smtp_outage_delays_but_does_not_lose(
    receipt_services: Services, smtp: SmtpServer
) -> None:
    smtp.stop()
    payment_id = await seed_succeeded(receipt_services)
    await run_receipt_jobs(receipt_services)
    async with receipt_services.db.read() as session:
        job = await session.scalar(select(Job).where(Job.kind == receipts.EMAIL))
    assert job is not None
    assert (job.status, job.attempts) == ("ready", 1)
    assert job.run_at > utcnow()  # backed off
    assert (await receipt_of(receipt_services, payment_id)).emailed_at is None

    smtp.start()
    for _ in range(2):
        async with receipt_services.db.transaction() as session:
            await session.execute(
                update(Job).where(Job.kind == receipts.EMAIL).values(run_at=utcnow())
            )
        await run_receipt_jobs(receipt_services, receipts.EMAIL)
    assert len(smtp.inbox.messages) == 1
    assert (await receipt_of(receipt_services, payment_id)).emailed_at is not None


async def test_the_dev_outbox_gets_an_eml(tmp_path: Path, sqlite_database_url: str) -> None:
    outbox = tmp_path / "mail"
    settings = make_settings(sqlite_database_url, mail_outbox_dir=str(outbox))
    async with open_services(settings) as services:
        payment_id = await seed_succeeded(services)
        await run_receipt_jobs(services)
        receipt = await receipt_of(services, payment_id)
    [eml] = list(outbox.glob("*.eml"))
    assert receipt.id in eml.name
    assert receipt.number.encode() in eml.read_bytes()
    assert receipt.emailed_at is not None
    assert receipt.pdf_key is None  # RECEIPT_STORAGE empty: nothing kept, rendered on demand


async def test_nowhere_to_send_logs_without_the_address(
    tmp_path: Path, sqlite_database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    settings: Settings = make_settings(sqlite_database_url, receipt_storage=str(tmp_path / "r"))
    caplog.set_level(logging.INFO)
    async with open_services(settings) as services:
        with_address = await seed_succeeded(services)
        without = await seed_succeeded(services, receipt_email=None)
        await run_receipt_jobs(services)
        assert (await receipt_of(services, with_address)).emailed_at is None
        assert (await receipt_of(services, without)).emailed_at is None
    logged = [r.getMessage() for r in caplog.records if "receipt e-mail" in r.getMessage()]
    assert any("no SMTP_URL" in m for m in logged)
    assert any("no address" in m for m in logged)
    assert all("@" not in r.getMessage() for r in caplog.records)
