"""Queries on idempotency keys."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from azora_payments.db.models import IdempotencyKey
from azora_payments.db.repositories.rows import one


async def get(
    session: AsyncSession, *, user_id: str, key: str, for_update: bool = False
) -> IdempotencyKey | None:
    query = select(IdempotencyKey).where(
        IdempotencyKey.user_id == user_id, IdempotencyKey.key == key
    )
    return await one(session, query, for_update=for_update)


async def get_by_id(session: AsyncSession, key_id: int) -> IdempotencyKey | None:
    query = select(IdempotencyKey).where(IdempotencyKey.id == key_id)
    return await one(session, query, for_update=True)


async def of_work(
    session: AsyncSession, *, payment_id: str | None = None, refund_id: str | None = None
) -> IdempotencyKey | None:
    """The key whose request made this payment (or refund), locked; None when it is gone."""
    query = select(IdempotencyKey)
    if payment_id is not None:
        query = query.where(IdempotencyKey.payment_id == payment_id)
    else:
        query = query.where(IdempotencyKey.refund_id == refund_id)
    return await one(session, query.limit(1), for_update=True)


async def replace_payment_answers(
    session: AsyncSession, *, payment_id: str, status: int, body: str
) -> int:
    """Overwrite the final answer of the key that made this payment (Stripe overturned a
    failure); how many keys changed."""
    result: Any = await session.execute(
        update(IdempotencyKey)
        .where(
            IdempotencyKey.payment_id == payment_id,
            IdempotencyKey.response_status.is_not(None),
        )
        .values(response_status=status, response_body=body)
        .execution_options(synchronize_session=False)
    )
    return int(result.rowcount or 0)


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
