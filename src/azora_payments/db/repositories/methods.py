"""Queries on saved payment methods."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import delete, literal, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from azora_payments.db.models import Customer, PaymentMethod
from azora_payments.db.repositories.upsert import insert_ignore


async def get(session: AsyncSession, payment_method_id: str) -> PaymentMethod | None:
    return await session.get(PaymentMethod, payment_method_id)


async def get_with_customer(
    session: AsyncSession, *, payment_method_id: str, user_id: str
) -> tuple[PaymentMethod | None, str | None]:
    """The saved method (whoever's it is) and the user's Stripe customer id, either None, in
    one statement: the row of one outer-joined to the method, the customer as a subquery."""
    customer = (
        select(Customer.stripe_customer_id).where(Customer.user_id == user_id).scalar_subquery()
    )
    one = select(literal(1).label("one")).subquery()
    query = (
        select(PaymentMethod, customer)
        .select_from(one)
        .outerjoin(PaymentMethod, PaymentMethod.id == payment_method_id)
    )
    row = (await session.execute(query)).one()
    return row[0], row[1]


async def get_for_user(
    session: AsyncSession, *, user_id: str, payment_method_id: str
) -> PaymentMethod | None:
    method = await session.get(PaymentMethod, payment_method_id)
    return method if method is not None and method.user_id == user_id else None


async def list_for_user(session: AsyncSession, user_id: str) -> Sequence[PaymentMethod]:
    query = (
        select(PaymentMethod)
        .where(PaymentMethod.user_id == user_id)
        .order_by(PaymentMethod.created_at.desc(), PaymentMethod.id.desc())
    )
    return (await session.scalars(query)).all()


async def insert_if_absent(session: AsyncSession, method: PaymentMethod) -> bool:
    values = {c.key: getattr(method, c.key) for c in PaymentMethod.__table__.columns}
    return await insert_ignore(session, PaymentMethod, values)


async def set_default(
    session: AsyncSession, *, user_id: str, payment_method_id: str | None
) -> None:
    """Exactly one default per user (or none), as Stripe's customer has."""
    await session.execute(
        update(PaymentMethod)
        .where(PaymentMethod.user_id == user_id)
        .values(is_default=PaymentMethod.id == payment_method_id)
        .execution_options(synchronize_session=False)
    )


async def remove(session: AsyncSession, payment_method_id: str) -> None:
    await session.execute(delete(PaymentMethod).where(PaymentMethod.id == payment_method_id))
