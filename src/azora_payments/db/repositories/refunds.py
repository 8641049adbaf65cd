"""Queries on refunds: by Stripe's id or ours, a payment's refunds, the stale pending ones."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from azora_payments.db.models import Refund
from azora_payments.domain.statuses import RefundStatus

# Refunds Stripe may still move on its own (pending ones settle, succeeded ones may still fail,
# but those are told by events; a stale pending one is what reconciliation re-reads).
UNSETTLED = (RefundStatus.PENDING, RefundStatus.REQUIRES_ACTION)


async def get(session: AsyncSession, refund_id: str) -> Refund | None:
    result: Refund | None = await session.get(Refund, refund_id)
    return result


async def get_by_stripe_id(session: AsyncSession, stripe_refund_id: str) -> Refund | None:
    query = select(Refund).where(Refund.stripe_refund_id == stripe_refund_id)
    result: Refund | None = (await session.scalars(query)).first()
    return result


def add(session: AsyncSession, refund: Refund) -> None:
    session.add(refund)


async def of_payment(session: AsyncSession, payment_id: str) -> Sequence[Refund]:
    query = select(Refund).where(Refund.payment_id == payment_id).order_by(Refund.created_at)
    return (await session.scalars(query)).all()


async def stale_unsettled_payment_ids(
    session: AsyncSession, *, older_than: datetime, limit: int
) -> Sequence[str]:
    """Payments with a refund still pending since before `older_than` (for reconciliation)."""
    query = (
        select(Refund.payment_id)
        .where(Refund.status.in_(UNSETTLED), Refund.updated_at < older_than)
        .group_by(Refund.payment_id)
        .limit(limit)
    )
    return (await session.scalars(query)).all()


async def unanswered(session: AsyncSession, *, older_than: datetime, limit: int) -> Sequence[str]:
    """Refunds still pending since before `older_than` that Stripe never gave us an id for:
    their request never heard back (for reconciliation), the oldest first."""
    query = (
        select(Refund.id)
        .where(
            Refund.status == RefundStatus.PENDING,
            Refund.stripe_refund_id.is_(None),
            Refund.updated_at < older_than,
        )
        .order_by(Refund.updated_at)
        .limit(limit)
    )
    return (await session.scalars(query)).all()
