"""A checkout session's status, in one place: `open` → `complete` (a payment succeeded) or
`expired` (its time ran out with no payment under way); `expired` → `complete` too, because
money taken is a fact (a 3-D Secure finished after the expiry still paid the order)."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy.ext.asyncio import AsyncSession

from azora_payments.db.models import CheckoutSession, Payment
from azora_payments.db.repositories import checkout as checkout_repo
from azora_payments.db.types import utcnow
from azora_payments.domain import audit


class CheckoutStatus(StrEnum):
    OPEN = "open"
    COMPLETE = "complete"
    EXPIRED = "expired"


def accepts_new_attempts(checkout: CheckoutSession, *, now: datetime) -> bool:
    """A new payment may start only on an open session before its expiry."""
    return checkout.status == CheckoutStatus.OPEN and now < checkout.expires_at


async def payment_succeeded(session: AsyncSession, payment: Payment) -> None:
    """In the transaction that marks `payment` succeeded: its session is complete, paid by it."""
    if payment.checkout_session_id is None:
        return
    checkout = await checkout_repo.get(session, payment.checkout_session_id, for_update=True)
    if checkout is None:
        return
    if checkout.payment_id is not None and checkout.payment_id != payment.id:
        # Only possible if Stripe reports money taken on an attempt we had seen fail: the
        # session stays paid by the first; operators are told so they can refund the other.
        audit.record(
            session,
            actor=audit.SYSTEM,
            action="checkout_session.paid_again",
            payment_id=payment.id,
            details={"checkout_session_id": checkout.id, "paid_by": checkout.payment_id},
        )
        return
    if checkout.status == CheckoutStatus.COMPLETE:
        return
    now = utcnow()
    checkout.status = CheckoutStatus.COMPLETE
    checkout.payment_id = payment.id
    checkout.completed_at = now
    checkout.updated_at = now
    audit.record(
        session,
        actor=audit.SYSTEM,
        action="checkout_session.completed",
        payment_id=payment.id,
        details={"checkout_session_id": checkout.id},
    )
