"""Refunds: what a payment may still give back, and a refund's failure. The refund request's
idempotent phases are in `refund_flow.py`.

A refund counts against what remains from the moment it is created (pending), as Stripe counts
it, until it fails or is canceled: no two refunds can take the same money.
"""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from azora_payments.db.models import Payment, Refund
from azora_payments.db.types import utcnow
from azora_payments.domain import audit, events, outcomes

# What cannot be refunded again: `amount_refunded`'s refunds, and those waiting on the customer.
COUNTED = ("pending", "requires_action", "succeeded")


def refundable(payment: Payment, refunds: list[Refund]) -> int:
    """What may still be refunded: the amount less refunds made or still pending."""
    return max(payment.amount - sum(r.amount for r in refunds if r.status in COUNTED), 0)


async def fail(session: AsyncSession, payment: Payment, row: Refund, code: str) -> None:
    """The refund failed (Stripe's `code`): it stops counting; audited and told once."""
    if row.status == "failed":
        return
    previous = row.status
    row.status = "failed"
    row.failure_reason = code
    row.updated_at = utcnow()
    await session.flush()
    await events.recount_refunded(session, payment)
    audit.record(
        session,
        actor=audit.STRIPE,
        action="refund.failed",
        payment_id=payment.id,
        details={"refund_id": row.id, "code": code},
    )
    await outcomes.refund_status_changed(session, payment, row, previous=previous)
