"""Receipt jobs: `receipt.issue` numbers the receipt and keeps its PDF; `receipt.email` sends it,
retried with backoff through an SMTP outage, and not again once `emailed_at` is set."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from azora_payments.db.repositories import payments as payments_repo
from azora_payments.db.repositories import receipts as receipts_repo
from azora_payments.db.types import utcnow
from azora_payments.domain import audit, receipts
from azora_payments.jobs.registry import JobContext, job_kind
from azora_payments.logs import log_fields
from azora_payments.mail import Delivery, Mailer, receipt_message
from azora_payments.pdf import pdf_amount, render_receipt
from azora_payments.storage import receipt_key, storage_for

logger = logging.getLogger(__name__)


@job_kind(receipts.ISSUE, max_attempts=20, timeout=60.0)
async def issue_receipt(ctx: JobContext, payload: dict[str, Any]) -> None:
    services = ctx.services
    payment_id = str(payload["payment_id"])
    async with services.db.transaction() as session:
        receipt = await receipts.issue(session, payment_id=payment_id)
    if receipt is None or receipt.pdf_key is not None:
        return
    storage = storage_for(services.settings.receipt_storage)
    if storage is None:
        return
    async with services.db.read() as session:
        payment = await payments_repo.get(session, payment_id)
        assert payment is not None
        doc = await receipts.document(
            session, receipt=receipt, payment=payment, settings=services.settings
        )
    # The copy as issued; the API renders the current state (with refunds) on each request.
    key = receipt_key(receipt.year, receipt.number)
    await storage.put(key, await asyncio.to_thread(render_receipt, doc))
    async with services.db.transaction() as session:
        row = await receipts_repo.get(session, receipt.id)
        assert row is not None
        row.pdf_key = key
    logger.info("receipt issued", extra=log_fields(payment_id=payment_id, receipt_id=receipt.id))


@job_kind(receipts.EMAIL, max_attempts=20, timeout=120.0, backoff_base=30.0, backoff_cap=3600.0)
async def email_receipt(ctx: JobContext, payload: dict[str, Any]) -> None:
    services = ctx.services
    settings = services.settings
    receipt_id = str(payload["receipt_id"])
    resend = payload.get("resend")
    async with services.db.read() as session:
        receipt = await receipts_repo.get(session, receipt_id)
        if receipt is None or (resend is None and receipt.emailed_at is not None):
            return
        payment = await payments_repo.get(session, receipt.payment_id)
        assert payment is not None
        doc = await receipts.document(session, receipt=receipt, payment=payment, settings=settings)
    fields = log_fields(receipt_id=receipt_id, payment_id=payment.id)
    mailer = Mailer(smtp_url=settings.smtp_url, outbox_dir=settings.mail_outbox_dir)
    # A re-send may go to another address an operator gave; the first sending never does.
    recipient = str(payload.get("to") or "") or payment.receipt_email
    if not recipient or mailer.delivery is Delivery.NOWHERE:
        reason = "no address" if not recipient else "no SMTP_URL or MAIL_OUTBOX_DIR"
        logger.warning(f"receipt e-mail not sent: {reason}", extra=fields)
        return
    message = receipt_message(
        sender=settings.receipt_from_email,
        sender_name=settings.merchant_name,
        recipient=recipient,
        number=receipt.number,
        amount_text=pdf_amount(receipt.amount, receipt.currency),
        description=payment.description,
        message_id=receipts.email_message_id(
            receipt, sender=settings.receipt_from_email, resend=resend
        ),
        pdf=await asyncio.to_thread(render_receipt, doc),
    )
    delivery = await mailer.send(message)
    # A crash before this commit sends the same message again (same Message-ID) on the retry.
    async with services.db.transaction() as session:
        row = await receipts_repo.get(session, receipt_id)
        assert row is not None
        row.emailed_at = utcnow()
        audit.record(
            session,
            actor=audit.SYSTEM,
            action="receipt.emailed",
            payment_id=payment.id,
            details={"receipt_id": receipt_id, "delivery": str(delivery), "resend": bool(resend)},
        )
    logger.info("receipt e-mailed", extra=fields)
