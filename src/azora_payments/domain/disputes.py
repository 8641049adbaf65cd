"""Disputes: what Stripe's dispute events do to a payment, moving forward only.

`disputed` only becomes true; `dispute_status` only moves forward
(needs_response < under_review < won/lost/warning_closed).
"""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from azora_payments.db.models import Payment
from azora_payments.db.types import utcnow
from azora_payments.domain import audit, outcomes

_DISPUTE_RANK = {
    "warning_needs_response": 0,
    "needs_response": 0,
    "warning_under_review": 1,
    "under_review": 1,
    "won": 2,
    "lost": 2,
    "warning_closed": 2,
}


async def settle_dispute(
    session: AsyncSession, payment: Payment, *, dispute_id: str, status: str
) -> list[str]:
    """`disputed` becomes true and stays; `dispute_status` moves forward only."""
    changes: list[str] = []
    first = not payment.disputed
    previous = payment.dispute_status
    moves = status in _DISPUTE_RANK and (
        previous is None or _DISPUTE_RANK[status] > _DISPUTE_RANK.get(previous, -1)
    )
    if not first and not moves:
        return changes
    payment.disputed = True
    if moves:
        payment.dispute_status = status
    payment.updated_at = utcnow()
    audit.record(
        session,
        actor=audit.STRIPE,
        action="payment.disputed" if first else "payment.dispute_updated",
        payment_id=payment.id,
        details={"dispute_id": dispute_id, "status": payment.dispute_status, "from": previous},
    )
    changes.append(f"{payment.id}: dispute {previous} -> {payment.dispute_status}")
    await outcomes.dispute_changed(session, payment, previous_status=previous, first=first)
    return changes
