"""Queries on idempotency keys."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from azora_payments.db.models import IdempotencyKey


async def get(
    session: AsyncSession, *, user_id: str, key: str, for_update: bool = False
) -> IdempotencyKey | None:
    query = select(IdempotencyKey).where(
        IdempotencyKey.user_id == user_id, IdempotencyKey.key == key
    )
    if for_update:
        query = query.with_for_update()
    result: IdempotencyKey | None = (await session.scalars(query)).first()
    return result


async def get_by_id(session: AsyncSession, key_id: int) -> IdempotencyKey | None:
    query = select(IdempotencyKey).where(IdempotencyKey.id == key_id).with_for_update()
    result: IdempotencyKey | None = (await session.scalars(query)).first()
    return result


async def delete_by_id(session: AsyncSession, key_id: int) -> None:
    await session.execute(delete(IdempotencyKey).where(IdempotencyKey.id == key_id))


async def delete_older_than(session: AsyncSession, cutoff: datetime) -> int:
    result = await session.execute(delete(IdempotencyKey).where(IdempotencyKey.created_at < cutoff))
    return int(getattr(result, "rowcount", 0) or 0)
