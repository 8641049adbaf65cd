"""Refunds: how a refund's state moves (`settle_refund`, shared by the API, webhooks and
reconciliation), what a payment may still give back, and a refund's failure. The refund
request's idempotent phases are in `refund_flow.py`.

A refund's status only moves forward (pending < requires_action < succeeded < failed/canceled:
a succeeded refund can still fail at the bank), and its amount is Stripe's. `amount_refunded` is
recomputed from the refund rows (pending or succeeded ones, as Stripe counts), never by adding
events up, so a replayed event cannot count twice.

A refund counts against what remains from the moment it is created (pending), as Stripe counts
it, until it fails or is canceled: no two refunds can take the same money.
"""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from azora_payments.db.models import Payment, Refund
from azora_payments.db.repositories import refunds as refunds_repo
from azora_payments.db.types import utcnow
from azora_payments.domain import audit, outcomes
from azora_payments.domain.statuses import RefundStatus
from azora_payments.ids import new_id
from azora_payments.stripe_gateway import StripeRefund

# What cannot be refunded again: `amount_refunded`'s refunds, and those waiting on the customer.
COUNTED = (RefundStatus.PENDING, RefundStatus.REQUIRES_ACTION, RefundStatus.SUCCEEDED)
_REFUND_RANK: dict[str, int] = {
    RefundStatus.PENDING: 0,
    RefundStatus.REQUIRES_ACTION: 1,
    RefundStatus.SUCCEEDED: 2,
    RefundStatus.FAILED: 3,
    RefundStatus.CANCELED: 3,
}
# What `amount_refunded` counts, as Stripe does: money that is or will be returned.
COUNTED_REFUNDS = frozenset({RefundStatus.PENDING, RefundStatus.SUCCEEDED})


def refundable(payment: Payment, refunds: list[Refund]) -> int:
    """What may still be refunded: the amount less refunds made or still pending."""
    return max(payment.amount - sum(r.amount for r in refunds if r.status in COUNTED), 0)


async def fail(session: AsyncSession, payment: Payment, row: Refund, code: str) -> None:
    """The refund failed (Stripe's `code`): it stops counting; audited and told once."""
    if row.status == RefundStatus.FAILED:
        return
    previous = row.status
    row.status = RefundStatus.FAILED
    row.failure_reason = code
    row.updated_at = utcnow()
    await session.flush()
    await recount_refunded(session, payment)
    audit.record(
        session,
        actor=audit.STRIPE,
        action="refund.failed",
        payment_id=payment.id,
        details={"refund_id": row.id, "code": code},
    )
    await outcomes.refund_status_changed(session, payment, row, previous=previous)


# ------------------------------------------------------------------ the refund's state


async def settle_refund(session: AsyncSession, payment: Payment, refund: StripeRefund) -> list[str]:
    """Record or update the refund Stripe describes, then recompute `amount_refunded` from the
    rows. A refund made in Stripe's dashboard becomes a refund of the payment (`created_by`
    stripe)."""
    changes: list[str] = []
    row = await refunds_repo.get_by_stripe_id(session, refund.id)
    ours = refund.metadata.get("azora_refund_id")
    id_free = True
    if row is None and ours:
        row = await refunds_repo.get(session, ours)
        id_free = row is None
        if row is not None and row.payment_id != payment.id:
            row = None  # metadata pointing elsewhere: trust Stripe's object, not the label
    now = utcnow()
    if row is None:
        row = Refund(
            # Our own refund whose row is missing keeps the id Stripe carries for it.
            id=ours if ours and id_free else new_id("rf"),
            payment_id=payment.id,
            amount=refund.amount,
            currency=refund.currency,
            status=refund.status,
            reason=refund.reason,
            stripe_refund_id=refund.id,
            failure_reason=refund.failure_reason,
            created_by=audit.STRIPE_ACTOR,
            created_at=now,
            updated_at=now,
        )
        refunds_repo.add(session, row)
        audit.record(
            session,
            actor=audit.STRIPE,
            action="refund.created",
            payment_id=payment.id,
            details={
                "refund_id": row.id,
                "stripe_refund_id": refund.id,
                "amount": refund.amount,
                "status": refund.status,
                "made_in_stripe": ours is None,
            },
        )
        changes.append(f"{payment.id}: refund {row.id} recorded ({refund.status})")
        await outcomes.refund_status_changed(session, payment, row, previous=None)
    else:
        if row.stripe_refund_id is None:
            row.stripe_refund_id = refund.id
        if row.amount != refund.amount:
            row.amount = refund.amount  # Stripe's amount is the truth
            row.updated_at = now
        if _refund_may_move(row.status, refund.status):
            previous = row.status
            row.status = refund.status
            if refund.failure_reason:
                row.failure_reason = refund.failure_reason
            row.updated_at = now
            audit.record(
                session,
                actor=audit.STRIPE,
                action=f"refund.{refund.status}",
                payment_id=payment.id,
                details={"refund_id": row.id, "from": previous, "stripe_refund_id": refund.id},
            )
            changes.append(f"{payment.id}: refund {row.id} {previous} -> {refund.status}")
            await outcomes.refund_status_changed(session, payment, row, previous=previous)
    changes += await recount_refunded(session, payment)
    return changes


def _refund_may_move(current: str, new: str) -> bool:
    if current == new or new not in _REFUND_RANK:
        return False
    return _REFUND_RANK[new] > _REFUND_RANK.get(current, -1)


async def recount_refunded(session: AsyncSession, payment: Payment) -> list[str]:
    """`amount_refunded` from the refund rows (pending and succeeded count, as Stripe counts)."""
    rows = await refunds_repo.of_payment(session, payment.id)
    total = sum(r.amount for r in rows if r.status in COUNTED_REFUNDS)
    if total == payment.amount_refunded:
        return []
    previous = payment.amount_refunded
    payment.amount_refunded = total
    payment.updated_at = utcnow()
    return [f"{payment.id}: amount_refunded {previous} -> {total}"]
