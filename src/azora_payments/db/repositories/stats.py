"""Aggregates for the console's overview: payments and refunds by currency and status over a
window, declines by reason, payments per hour, and the counts of what waits for an operator."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from azora_payments.db.models import Payment, Refund, WebhookEvent
from azora_payments.domain.statuses import EventStatus, PaymentStatus

FINAL_DISPUTE_STATUSES = ("won", "lost", "warning_closed")


@dataclass(frozen=True, slots=True)
class Total:
    currency: str
    status: str
    count: int
    amount: int


async def payment_totals(session: AsyncSession, *, since: datetime) -> list[Total]:
    query = (
        select(
            Payment.currency,
            Payment.status,
            func.count(),
            func.coalesce(func.sum(Payment.amount), 0),
        )
        .where(Payment.created_at >= since)
        .group_by(Payment.currency, Payment.status)
    )
    return [Total(c, s, int(n), int(a)) for c, s, n, a in (await session.execute(query)).all()]


async def refund_totals(session: AsyncSession, *, since: datetime) -> list[Total]:
    query = (
        select(
            Refund.currency, Refund.status, func.count(), func.coalesce(func.sum(Refund.amount), 0)
        )
        .where(Refund.created_at >= since)
        .group_by(Refund.currency, Refund.status)
    )
    return [Total(c, s, int(n), int(a)) for c, s, n, a in (await session.execute(query)).all()]


async def declines(
    session: AsyncSession, *, since: datetime, limit: int = 10
) -> list[tuple[str, int]]:
    """Failed payments by Stripe's reason (the decline code, else the error code), most first."""
    reason = func.coalesce(Payment.failure_decline_code, Payment.failure_code, "unknown")
    query = (
        select(reason, func.count())
        .where(Payment.status == PaymentStatus.FAILED, Payment.created_at >= since)
        .group_by(reason)
        .order_by(func.count().desc())
        .limit(limit)
    )
    return [(str(r), int(n)) for r, n in (await session.execute(query)).all()]


async def per_hour(session: AsyncSession, *, since: datetime) -> list[tuple[str, str, int]]:
    """(hour as 'YYYY-MM-DDTHH', status, count) for payments created since `since`."""
    hour: Any
    if session.get_bind().dialect.name == "postgresql":
        hour = func.to_char(func.timezone("UTC", Payment.created_at), 'YYYY-MM-DD"T"HH24')
    else:
        hour = func.strftime("%Y-%m-%dT%H", Payment.created_at)
    query = (
        select(hour, Payment.status, func.count())
        .where(
            Payment.created_at >= since,
            Payment.status.in_((PaymentStatus.SUCCEEDED, PaymentStatus.FAILED)),
        )
        .group_by(hour, Payment.status)
    )
    return [(str(h), str(s), int(n)) for h, s, n in (await session.execute(query)).all()]


async def open_disputes(session: AsyncSession) -> int:
    query = select(func.count()).where(
        Payment.disputed.is_(True),
        func.coalesce(Payment.dispute_status, "").not_in(FINAL_DISPUTE_STATUSES),
    )
    return int(await session.scalar(query) or 0)


async def events_with_status(session: AsyncSession, status: str) -> int:
    query = select(func.count()).where(WebhookEvent.status == status)
    return int(await session.scalar(query) or 0)


async def oldest_waiting_event(session: AsyncSession) -> datetime | None:
    query = select(func.min(WebhookEvent.received_at)).where(
        WebhookEvent.status == EventStatus.RECEIVED
    )
    result: datetime | None = await session.scalar(query)
    return result
