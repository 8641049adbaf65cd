"""Queries on recorded card declines (what the decline limits count without Redis)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.selectable import ScalarSelect

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


@dataclass(frozen=True, slots=True)
class Look:
    """The `n`-th newest decline counted against `value` (by a user, card or address) since
    `since`."""

    by: str
    value: str
    since: datetime
    n: int


def _nth_newest(look: Look) -> ScalarSelect[datetime]:
    # Reads at most `n` index entries.
    return (
        select(CardDecline.at)
        .where(COLUMNS[look.by] == look.value, CardDecline.at > look.since)
        .order_by(CardDecline.at.desc())
        .offset(look.n - 1)
        .limit(1)
        .scalar_subquery()
    )


async def nth_newest_of_each(session: AsyncSession, looks: Sequence[Look]) -> list[datetime | None]:
    """When each look's decline happened (None when there are fewer than its `n`), in one
    statement: one scalar subquery a look."""
    if not looks:
        return []
    row = (await session.execute(select(*(_nth_newest(look) for look in looks)))).one()
    return list(row)


async def delete_older_than(session: AsyncSession, cutoff: datetime) -> int:
    result: Any = await session.execute(delete(CardDecline).where(CardDecline.at < cutoff))
    return int(result.rowcount or 0)
