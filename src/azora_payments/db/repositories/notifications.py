"""Queries on notifications to the product's backend."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import and_, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from azora_payments.db.models import Notification


def add(session: AsyncSession, notification: Notification) -> None:
    session.add(notification)


async def get(session: AsyncSession, notification_id: str) -> Notification | None:
    result: Notification | None = await session.get(Notification, notification_id)
    return result


async def page(
    session: AsyncSession, *, limit: int, after: tuple[datetime, str] | None
) -> Sequence[Notification]:
    """Oldest first, resuming strictly after `after`."""
    query = select(Notification)
    if after is not None:
        at, last_id = after
        query = query.where(
            Notification.created_at >= at,
            or_(
                Notification.created_at > at,
                and_(Notification.created_at == at, Notification.id > last_id),
            ),
        )
    query = query.order_by(Notification.created_at, Notification.id).limit(limit)
    return (await session.scalars(query)).all()


async def of_payment(session: AsyncSession, payment_id: str) -> Sequence[Notification]:
    query = (
        select(Notification)
        .where(Notification.payment_id == payment_id)
        .order_by(Notification.created_at, Notification.id)
    )
    return (await session.scalars(query)).all()


async def undelivered(session: AsyncSession, *, tried: bool, limit: int) -> Sequence[Notification]:
    """Not delivered yet, newest first; `tried`: only those already attempted (and failed)."""
    query = select(Notification).where(Notification.delivered_at.is_(None))
    if tried:
        query = query.where(Notification.attempts > 0)
    query = query.order_by(Notification.created_at.desc(), Notification.id.desc()).limit(limit)
    return (await session.scalars(query)).all()
