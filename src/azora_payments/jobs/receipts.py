"""Receipt jobs: `receipt.issue` numbers the receipt and stores its first version;
`receipt.render` stores a new version when a refund changed what it shows; `receipt.email`
sends the latest version, retried with backoff through an SMTP or storage outage, and not
again once `emailed_at` is set."""

from __future__ import annotations

import logging
from typing import Any

from azora_payments.addresses import plain_address_or_none
from azora_payments.db.repositories import payments as payments_repo
from azora_payments.db.repositories import receipts as receipts_repo
from azora_payments.domain import receipts
from azora_payments.domain.receipt_content import content_of
from azora_payments.jobs.facts import record_emailed
from azora_payments.jobs.registry import JobContext, job_kind
from azora_payments.logs import log_fields
from azora_payments.mail import Delivery, receipt_message

logger = logging.getLogger(__name__)


@job_kind(receipts.ISSUE, max_attempts=20, timeout=60.0)
async def issue_receipt(ctx: JobContext, payload: dict[str, Any]) -> None:
    services = ctx.services
    payment_id = str(payload["payment_id"])
    async with services.db.transaction() as session:
        receipt = await receipts.issue(session, payment_id=payment_id)
    if receipt is None or services.storage is None:
        return
    # A store that is down fails the job after the number is taken: the retry finds the
    # receipt issued and only stores its version.
    stored = await receipts.current_pdf(
        db=services.db,
        storage=services.storage,
        settings=services.settings,
        receipt_id=receipt.id,
        reason="issued",
    )
    logger.info(
        "receipt issued",
        extra=log_fields(payment_id=payment_id, receipt_id=receipt.id, version=stored.version),
    )


@job_kind(receipts.RENDER, max_attempts=20, timeout=60.0)
async def render_receipt(ctx: JobContext, payload: dict[str, Any]) -> None:
    services = ctx.services
    async with services.db.read() as session:
        receipt = await receipts_repo.of_payment(session, str(payload["payment_id"]))
    # Without a receipt yet, `receipt.issue` will store what the payment shows then.
    if receipt is None or services.storage is None:
        return
    await receipts.current_pdf(
        db=services.db,
        storage=services.storage,
        settings=services.settings,
        receipt_id=receipt.id,
        reason=f"refund {payload.get('cause', '')}".strip(),
    )


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
    fields = log_fields(receipt_id=receipt_id, payment_id=payment.id)
    mailer = services.mailer
    # An operator's choice for this re-send, else the payment's (rows from before addresses were
    # checked may hold a list: those are not sent at all).
    recipient = plain_address_or_none(payload.get("email") or payment.receipt_email)
    if not recipient or mailer.delivery is Delivery.NOWHERE:
        reason = "no address" if not recipient else "no SMTP_URL or MAIL_OUTBOX_DIR"
        logger.warning(f"receipt e-mail not sent: {reason}", extra=fields)
        return
    stored = await receipts.current_pdf(
        db=services.db,
        storage=services.storage,
        settings=settings,
        receipt_id=receipt_id,
        reason="e-mailed",
    )
    message = receipt_message(
        sender=settings.receipt_from_email,
        sender_name=settings.merchant_name,
        recipient=recipient,
        number=receipt.number,
        content=content_of(stored.document),
        lang=settings.receipt_locale,
        message_id=receipts.email_message_id(
            receipt, sender=settings.receipt_from_email, resend=resend
        ),
        pdf=stored.data,
    )
    delivery = await mailer.send(message)

    # A crash before this is committed sends the same message again (same Message-ID) on the
    # retry; a database outage only delays the commit (`record_emailed`).
    await record_emailed(
        services.db,
        "receipt",
        receipt_id,
        receipts_repo.get,
        payment_id=payment.id,
        delivery=delivery,
        details={"resend": bool(resend), "version": stored.version},
    )
    logger.info("receipt e-mailed", extra=fields)
