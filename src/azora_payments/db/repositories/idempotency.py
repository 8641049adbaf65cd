"""Queries on idempotency keys."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import delete, select, update
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


async def update_if_locked(
    session: AsyncSession, *, key_id: int, lock: datetime, values: dict[str, Any]
) -> bool:
    """Update the key only while it is still locked with `lock` (one conditional UPDATE, which
    takes the row lock as SELECT … FOR UPDATE would); False when another attempt holds it."""
    result: Any = await session.execute(
        update(IdempotencyKey)
        .where(IdempotencyKey.id == key_id, IdempotencyKey.locked_at == lock)
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    return bool(result.rowcount)


async def delete_by_id(session: AsyncSession, key_id: int) -> None:
    await session.execute(delete(IdempotencyKey).where(IdempotencyKey.id == key_id))


async def delete_older_than(session: AsyncSession, cutoff: datetime) -> int:
    result = await session.execute(delete(IdempotencyKey).where(IdempotencyKey.created_at < cutoff))
    return int(getattr(result, "rowcount", 0) or 0)
