"""Queries on checkout sessions and the payments that are their attempts."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import exists, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from azora_payments.db.models import CheckoutSession, Payment
from azora_payments.db.repositories.rows import one


async def get(
    session: AsyncSession, checkout_id: str, *, for_update: bool = False
) -> CheckoutSession | None:
    query = select(CheckoutSession).where(CheckoutSession.id == checkout_id)
    return await one(session, query, for_update=for_update)


def add(session: AsyncSession, checkout: CheckoutSession) -> None:
    session.add(checkout)


async def attempts(session: AsyncSession, checkout_id: str) -> Sequence[Payment]:
    """The session's payments, oldest first (a handful at most: declines are rate limited)."""
    query = (
        select(Payment)
        .where(Payment.checkout_session_id == checkout_id)
        .order_by(Payment.created_at, Payment.id)
    )
    return (await session.scalars(query)).all()


async def expire_due(
    session: AsyncSession, *, now: datetime, unsettled: Sequence[str], limit: int
) -> int:
    """Open sessions past their expiry with no payment still under way become `expired`."""
    under_way = exists().where(
        Payment.checkout_session_id == CheckoutSession.id, Payment.status.in_(unsettled)
    )
    due = (
        select(CheckoutSession.id)
        .where(CheckoutSession.status == "open", CheckoutSession.expires_at <= now, ~under_way)
        .limit(limit)
    )
    ids = list((await session.scalars(due)).all())
    if not ids:
        return 0
    result = await session.execute(
        update(CheckoutSession)
        .where(CheckoutSession.id.in_(ids), CheckoutSession.status == "open", ~under_way)
        .values(status="expired", updated_at=now)
        .execution_options(synchronize_session=False)
    )
    return int(result.rowcount)  # type: ignore[attr-defined]
