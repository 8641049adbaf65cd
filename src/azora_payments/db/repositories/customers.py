"""Queries on users' Stripe customers."""

from __future__ import annotations

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from azora_payments.db.models import Customer
from azora_payments.db.repositories.upsert import insert_ignore
from azora_payments.db.types import utcnow


async def get_stripe_id(session: AsyncSession, user_id: str) -> str | None:
    result: str | None = await session.scalar(
        select(Customer.stripe_customer_id).where(Customer.user_id == user_id)
    )
    return result


async def insert_if_absent(session: AsyncSession, *, user_id: str, stripe_customer_id: str) -> None:
    await insert_ignore(
        session,
        Customer,
        {"user_id": user_id, "stripe_customer_id": stripe_customer_id, "created_at": utcnow()},
    )


async def user_of(session: AsyncSession, stripe_customer_id: str) -> str | None:
    result: str | None = await session.scalar(
        select(Customer.user_id).where(Customer.stripe_customer_id == stripe_customer_id)
    )
    return result


async def next_default_method_version(session: AsyncSession, user_id: str) -> int:
    """Number the next change of the user's default card (1, 2, …), never the same twice."""
    version: int | None = await session.scalar(
        update(Customer)
        .where(Customer.user_id == user_id)
        .values(default_method_version=Customer.default_method_version + 1)
        .returning(Customer.default_method_version)
    )
    assert version is not None, "the customer exists before its default card is set"
    return version
