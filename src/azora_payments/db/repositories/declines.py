"""Queries on recorded card declines (what the decline limits count without Redis)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from azora_payments.db.models import CardDecline
from azora_payments.db.repositories.upsert import insert_ignore

COLUMNS = {
    "user": CardDecline.user_id,
    "card": CardDecline.card_fingerprint,
    "ip": CardDecline.client_ip,
}


async def insert_if_absent(session: AsyncSession, values: dict[str, Any]) -> bool:
    """True when this decline (by its `source`) was not recorded before."""
    return await insert_ignore(session, CardDecline, values, conflict="source")


async def nth_newest_since(
    session: AsyncSession, *, by: str, value: str, since: datetime, n: int
) -> datetime | None:
    """When the `n`-th newest decline counted against `value` (a user, card or address) since
    `since` happened; None when there are fewer than `n`. Reads at most `n` index entries."""
    column = COLUMNS[by]
    query = (
        select(CardDecline.at)
        .where(column == value, CardDecline.at > since)
        .order_by(CardDecline.at.desc())
        .offset(n - 1)
        .limit(1)
    )
    at: datetime | None = await session.scalar(query)
    return at


async def delete_older_than(session: AsyncSession, cutoff: datetime) -> int:
    result: Any = await session.execute(delete(CardDecline).where(CardDecline.at < cutoff))
    return int(result.rowcount or 0)
