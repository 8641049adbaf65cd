"""Aggregates for the console's overview: payments by hour, currency, status and decline
reason over a window, refunds by currency and status, and the counts of what waits for an
operator: four statements for the whole page."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from azora_payments.db.models import Job, Payment, Refund, RefundApproval, WebhookEvent
from azora_payments.db.repositories import events
from azora_payments.domain.statuses import JobStatus, PaymentStatus

FINAL_DISPUTE_STATUSES = ("won", "lost", "warning_closed")


@dataclass(frozen=True, slots=True)
class Total:
    currency: str
    status: str
    count: int
    amount: int


@dataclass(frozen=True, slots=True)
class Group:
    """Payments created in one hour, of one currency and status."""

    hour: str  # 'YYYY-MM-DDTHH', UTC
    currency: str
    status: str
    count: int
    amount: int


async def payment_groups(session: AsyncSession, *, since: datetime) -> list[Group]:
    """One read for a window's totals and its hourly chart, from the covering index alone (a
    day's payments lie on as many heap pages as there are payments)."""
    hour: Any
    if session.get_bind().dialect.name == "postgresql":
        hour = func.to_char(func.timezone("UTC", Payment.created_at), 'YYYY-MM-DD"T"HH24')
    else:
        hour = func.strftime("%Y-%m-%dT%H", Payment.created_at)
    query = (
        select(
            hour,
            Payment.currency,
            Payment.status,
            func.count(),
            func.coalesce(func.sum(Payment.amount), 0),
        )
        .where(Payment.created_at >= since)
        .group_by(hour, Payment.currency, Payment.status)
    )
    return [
        Group(str(h), str(c), str(st), int(n), int(a))
        for h, c, st, n, a in (await session.execute(query)).all()
    ]


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
        .order_by(func.count().desc(), reason)
        .limit(limit)
    )
    return [(str(r), int(n)) for r, n in (await session.execute(query)).all()]


@dataclass(frozen=True, slots=True)
class Attention:
    """What waits for an operator, counted in one statement."""

    open_disputes: int
    parked_events: int
    oldest_waiting_event: datetime | None
    newest_event: datetime | None
    pending_approvals: int
    dead_jobs: int
    queue_depth: int
    oldest_due: datetime | None


async def attention(session: AsyncSession, *, now: datetime) -> Attention:
    open_disputes = select(func.count()).where(
        Payment.disputed.is_(True),
        func.coalesce(Payment.dispute_status, "").not_in(FINAL_DISPUTE_STATUSES),
    )
    query = select(
        open_disputes.scalar_subquery(),
        _count(WebhookEvent.status == events.PARKED),
        select(func.min(WebhookEvent.received_at))
        .where(WebhookEvent.status == events.RECEIVED)
        .scalar_subquery(),
        select(func.max(WebhookEvent.stripe_created)).scalar_subquery(),
        _count(RefundApproval.status == "pending"),
        _count(Job.status == JobStatus.DEAD),
        _count(Job.status == JobStatus.READY),
        # Scheduled kinds wait in `ready` for their next slot: only jobs already due are late.
        select(func.min(Job.run_at))
        .where(Job.status == JobStatus.READY, Job.run_at <= now)
        .scalar_subquery(),
    )
    row = (await session.execute(query)).one()
    disputes, parked, waiting, newest, approvals, dead, ready, due = row
    return Attention(
        open_disputes=int(disputes),
        parked_events=int(parked),
        oldest_waiting_event=waiting,
        newest_event=newest,
        pending_approvals=int(approvals),
        dead_jobs=int(dead),
        queue_depth=int(ready),
        oldest_due=due,
    )


def _count(condition: ColumnElement[bool]) -> Any:
    return select(func.count()).where(condition).scalar_subquery()
