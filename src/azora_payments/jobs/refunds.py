"""Tells the customer, by e-mail, that a refund succeeded: once, from the durable queue, with
the receipt as it now stands (a new version that lists the refund) attached."""

from __future__ import annotations

import logging
from typing import Any

from azora_payments.addresses import plain_address_or_none
from azora_payments.db.repositories import payments as payments_repo
from azora_payments.db.repositories import receipts as receipts_repo
from azora_payments.db.repositories import refunds as refunds_repo
from azora_payments.domain import receipts
from azora_payments.domain.formatting import Formatter
from azora_payments.domain.outcomes import REFUND_EMAIL
from azora_payments.domain.receipt_content import content_of
from azora_payments.domain.statuses import RefundStatus
from azora_payments.jobs.facts import record_emailed
from azora_payments.jobs.registry import JobContext, job_kind
from azora_payments.logs import log_fields
from azora_payments.mail import Delivery, refund_message

logger = logging.getLogger(__name__)


@job_kind(REFUND_EMAIL, max_attempts=20, timeout=120.0, backoff_base=30.0, backoff_cap=3600.0)
async def email_refund(ctx: JobContext, payload: dict[str, Any]) -> None:
    services = ctx.services
    settings = services.settings
    refund_id = str(payload["refund_id"])
    async with services.db.read() as session:
        refund = await refunds_repo.get(session, refund_id)
        if (
            refund is None
            or refund.emailed_at is not None
            or refund.status != RefundStatus.SUCCEEDED
        ):
            return
        payment = await payments_repo.get(session, refund.payment_id)
        assert payment is not None
        receipt = await receipts_repo.of_payment(session, payment.id)
    fields = log_fields(refund_id=refund_id, payment_id=payment.id)
    mailer = services.mailer
    recipient = plain_address_or_none(payment.receipt_email)
    if not recipient or mailer.delivery is Delivery.NOWHERE:
        logger.warning("refund e-mail not sent: no address or nowhere to send", extra=fields)
        return
    stored = None
    if receipt is not None:
        # The version that shows this refund: stored now if `receipt.render` has not yet run.
        stored = await receipts.current_pdf(
            db=services.db,
            storage=services.storage,
            settings=settings,
            receipt_id=receipt.id,
            reason=f"refund {refund.id}:succeeded",
        )
    domain = settings.receipt_from_email.rpartition("@")[2] or "azora.dev"
    fmt = Formatter(settings.receipt_locale, settings.receipt_timezone)
    message = refund_message(
        sender=settings.receipt_from_email,
        sender_name=settings.merchant_name,
        recipient=recipient,
        amount_text=fmt.amount(refund.amount, refund.currency),
        description=payment.description,
        receipt_number=receipt.number if receipt is not None else None,
        content=content_of(stored.document) if stored is not None else None,
        lang=settings.receipt_locale,
        # A crash between sending and the commit below sends it again: the same Message-ID.
        message_id=f"<{refund.id}.refunded@{domain}>",
        pdf=stored.data if stored is not None else None,
    )
    delivery = await mailer.send(message)

    # A fact once the SMTP server has it: retried through a database outage (`record_emailed`).
    await record_emailed(
        services.db,
        "refund",
        refund_id,
        refunds_repo.get,
        payment_id=payment.id,
        delivery=delivery,
        details={"receipt_version": stored.version if stored is not None else None},
    )
    logger.info("refund e-mailed", extra=fields)
