"""Queries on payments, their refunds and receipts."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import and_, func, literal, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from azora_payments.db.models import Payment, Receipt, Refund
from azora_payments.db.repositories.rows import one
from azora_payments.domain.statuses import UNSETTLED_PAYMENTS, PaymentStatus


@dataclass(frozen=True, slots=True)
class HistoryFilter:
    user_id: str | None = None
    status: str | None = None
    created_gte: datetime | None = None
    created_lt: datetime | None = None
    stripe_payment_intent_id: str | None = None
    currency: str | None = None
    amount_gte: int | None = None
    amount_lte: int | None = None


async def get(
    session: AsyncSession, payment_id: str, *, for_update: bool = False
) -> Payment | None:
    return await one(
        session, select(Payment).where(Payment.id == payment_id), for_update=for_update
    )


async def get_by_intent(
    session: AsyncSession, intent_id: str, *, for_update: bool = False
) -> Payment | None:
    query = select(Payment).where(Payment.stripe_payment_intent_id == intent_id)
    return await one(session, query, for_update=for_update)


async def lock_by_intents(session: AsyncSession, intent_ids: Sequence[str]) -> Sequence[Payment]:
    """The payments of these PaymentIntents, locked in id order (so that two transactions
    locking overlapping sets wait for each other instead of deadlocking)."""
    if not intent_ids:
        return []
    query = (
        select(Payment)
        .where(Payment.stripe_payment_intent_id.in_(intent_ids))
        .order_by(Payment.id)
        .with_for_update()
    )
    return (await session.scalars(query)).all()


def add(session: AsyncSession, payment: Payment) -> None:
    session.add(payment)


async def page(
    session: AsyncSession, *, where: HistoryFilter, limit: int, after: tuple[datetime, str] | None
) -> Sequence[Payment]:
    """Newest first, ties broken by id; resumes strictly after `after` (keyset, so the cost is
    the same at any depth and new payments never shift a page)."""
    query = select(Payment)
    if where.user_id is not None:
        query = query.where(Payment.user_id == where.user_id)
    if where.status is not None:
        query = query.where(Payment.status == where.status)
    if where.created_gte is not None:
        query = query.where(Payment.created_at >= where.created_gte)
    if where.created_lt is not None:
        query = query.where(Payment.created_at < where.created_lt)
    if where.stripe_payment_intent_id is not None:
        query = query.where(Payment.stripe_payment_intent_id == where.stripe_payment_intent_id)
    if where.currency is not None:
        query = query.where(Payment.currency == where.currency)
    if where.amount_gte is not None:
        query = query.where(Payment.amount >= where.amount_gte)
    if where.amount_lte is not None:
        query = query.where(Payment.amount <= where.amount_lte)
    if after is not None:
        at, last_id = after
        # The redundant `created_at <= at` is the index range (the planners cannot derive one
        # from the OR alone, and would scan and discard every row before the cursor).
        query = query.where(
            Payment.created_at <= at,
            or_(Payment.created_at < at, and_(Payment.created_at == at, Payment.id < last_id)),
        )
    query = query.order_by(Payment.created_at.desc(), Payment.id.desc()).limit(limit)
    return (await session.scalars(query)).all()


async def refunds_of(session: AsyncSession, payment_ids: Sequence[str]) -> dict[str, list[Refund]]:
    out: dict[str, list[Refund]] = defaultdict(list)
    if not payment_ids:
        return out
    query = (
        select(Refund)
        .where(Refund.payment_id.in_(payment_ids))
        .order_by(Refund.created_at, Refund.id)
    )
    for refund in (await session.scalars(query)).all():
        out[refund.payment_id].append(refund)
    return out


async def receipts_of(session: AsyncSession, payment_ids: Sequence[str]) -> dict[str, Receipt]:
    if not payment_ids:
        return {}
    query = select(Receipt).where(Receipt.payment_id.in_(payment_ids))
    return {r.payment_id: r for r in (await session.scalars(query)).all()}


async def refunds_and_receipt_of(
    session: AsyncSession, payment_id: str
) -> tuple[list[Refund], Receipt | None]:
    """One payment's refunds (as `refunds_of` orders them) and receipt, in one statement: a
    row of one outer-joined to its receipt, then to its refunds."""
    one_row = select(literal(1).label("one")).subquery()
    query = (
        select(Receipt, Refund)
        .select_from(one_row)
        .outerjoin(Receipt, Receipt.payment_id == payment_id)
        .outerjoin(Refund, Refund.payment_id == payment_id)
        .order_by(Refund.created_at, Refund.id)
    )
    rows = (await session.execute(query)).all()
    refunds = [refund for _, refund in rows if refund is not None]
    return refunds, rows[0][0]


async def stale_unsettled(
    session: AsyncSession, *, older_than: datetime, limit: int
) -> Sequence[Payment]:
    """Payments in a non-final state, unchanged and not re-read since `older_than`, the longest
    waiting first (for reconciliation)."""
    last_look = func.coalesce(Payment.reconciled_at, Payment.updated_at)
    query = (
        select(Payment)
        .where(
            Payment.status.in_(UNSETTLED_PAYMENTS),
            Payment.updated_at < older_than,
            or_(Payment.reconciled_at.is_(None), Payment.reconciled_at < older_than),
        )
        .order_by(last_look)
        .limit(limit)
    )
    return (await session.scalars(query)).all()


async def waiting_for_action_since(
    session: AsyncSession, *, before: datetime, limit: int
) -> Sequence[str]:
    """Payments left in `requires_action` since before `before`, the oldest first."""
    query = (
        select(Payment.id)
        .where(Payment.status == PaymentStatus.REQUIRES_ACTION, Payment.updated_at < before)
        .order_by(Payment.updated_at)
        .limit(limit)
    )
    return (await session.scalars(query)).all()


async def mark_reconciled(session: AsyncSession, payment_id: str, *, at: datetime) -> None:
    """Note a re-read from Stripe without touching `updated_at` (nothing changed for users)."""
    await session.execute(
        update(Payment)
        .where(Payment.id == payment_id)
        .values(reconciled_at=at, updated_at=Payment.updated_at)
        .execution_options(synchronize_session=False)
    )


async def disputed(
    session: AsyncSession, *, limit: int, after: tuple[datetime, str] | None
) -> Sequence[Payment]:
    """Disputed payments, the latest change first (keyset on the disputes index)."""
    query = select(Payment).where(Payment.disputed.is_(True))
    if after is not None:
        at, last_id = after
        query = query.where(
            Payment.updated_at <= at,
            or_(Payment.updated_at < at, and_(Payment.updated_at == at, Payment.id < last_id)),
        )
    query = query.order_by(Payment.updated_at.desc(), Payment.id.desc()).limit(limit)
    return (await session.scalars(query)).all()
