"""What follows a change of a payment, a refund or a dispute: every such change passes here,
in the transaction that makes it, whether it was learnt from the API's own call to Stripe, a
webhook or reconciliation. A job enqueued here (receipt, e-mail, notification to the product)
commits with the change or not at all: use `jobs.enqueue(session, …, unique_key=…)`.

Notifications to the product's backend are told here: payment.succeeded, .failed,
.requires_action, .canceled, .disputed; refund.succeeded, .failed. A failed payment's
PaymentIntent is closed at Stripe from the queue (no `client_secret` may retry it), and a
failure Stripe overturns rewrites the request's stored answer.
"""

from __future__ import annotations

import logging

from sqlalchemy.ext.asyncio import AsyncSession

from azora_payments.db.models import Payment, Refund
from azora_payments.db.repositories import payments as payments_repo
from azora_payments.domain import (
    checkout_state,
    event_batch,
    final_answers,
    notifications,
    receipts,
)
from azora_payments.domain.statuses import PaymentStatus, RefundStatus
from azora_payments.jobs import enqueue
from azora_payments.logs import log_fields

logger = logging.getLogger(__name__)

REFUND_EMAIL = "refund.email"
CLOSE_INTENT = "stripe.intent.close"


async def payment_status_changed(session: AsyncSession, payment: Payment, *, previous: str) -> None:
    """A payment moved from `previous` to `payment.status`."""
    logger.info(
        "payment status changed",
        extra=log_fields(payment_id=payment.id, previous=previous, status=payment.status),
    )
    if payment.status == PaymentStatus.SUCCEEDED:
        await receipts.enqueue_issue(session, payment)
        await checkout_state.payment_succeeded(session, payment)
        if previous in final_answers.GIVEN_UP:
            await final_answers.failure_overturned(session, payment, previous=previous)
    if payment.status == PaymentStatus.FAILED and payment.stripe_payment_intent_id is not None:
        # Declined or given up: its intent must not be confirmed again with other cards.
        await enqueue(
            session,
            kind=CLOSE_INTENT,
            payload={"payment_id": payment.id},
            unique_key=f"intent-close:{payment.id}",
        )
    kind = notifications.PAYMENT_TYPES.get(payment.status)
    if kind is not None:
        await _tell_payment(session, payment, kind)


async def refund_status_changed(
    session: AsyncSession, payment: Payment, refund: Refund, *, previous: str | None
) -> None:
    """A refund was first seen (`previous` None) or moved (to succeeded, failed, canceled…)."""
    logger.info(
        "refund status changed",
        extra=log_fields(
            payment_id=payment.id, refund_id=refund.id, previous=previous, status=refund.status
        ),
    )
    kind = notifications.REFUND_TYPES.get(refund.status)
    if kind is not None:
        await notifications.tell(
            session,
            type=kind,
            payment_id=payment.id,
            data=notifications.refund_data(refund, payment),
        )
    # What the receipt shows changes with every refund that appears or moves: a new version.
    await receipts.enqueue_render(
        session, payment_id=payment.id, cause=f"{refund.id}:{refund.status}"
    )
    if refund.status == RefundStatus.SUCCEEDED:
        # The customer is e-mailed once it succeeds (API.md, refunds).
        await enqueue(
            session,
            kind=REFUND_EMAIL,
            payload={"refund_id": refund.id},
            unique_key=f"refund-email:{refund.id}",
        )


async def dispute_changed(
    session: AsyncSession, payment: Payment, *, previous_status: str | None, first: bool
) -> None:
    """A payment was disputed (`first`) or its dispute moved on."""
    logger.info(
        "payment dispute changed",
        extra=log_fields(
            payment_id=payment.id, previous=previous_status, status=payment.dispute_status
        ),
    )
    if first:
        await _tell_payment(session, payment, "payment.disputed")


async def _tell_payment(session: AsyncSession, payment: Payment, kind: str) -> None:
    # A batch of webhook events read these for all its payments at once (`event_batch`).
    known = event_batch.notification_reads(session, payment.id)
    if known is None:
        refunds = await payments_repo.refunds_of(session, [payment.id])
        receipts = await payments_repo.receipts_of(session, [payment.id])
        known = refunds.get(payment.id, []), receipts.get(payment.id)
    data = notifications.payment_data(payment, refunds=known[0], receipt=known[1])
    await notifications.tell(session, type=kind, payment_id=payment.id, data=data)
