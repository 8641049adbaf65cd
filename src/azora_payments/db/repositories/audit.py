"""Queries on the append-only audit log."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from azora_payments.db.models import AuditRecord


def add(session: AsyncSession, record: AuditRecord) -> None:
    session.add(record)


async def page(
    session: AsyncSession,
    *,
    limit: int,
    after: tuple[datetime, int] | None = None,
    payment_id: str | None = None,
    actor: str | None = None,
    action: str | None = None,
) -> Sequence[AuditRecord]:
    """Newest first. Ids grow with time, so the id alone orders and resumes the page."""
    query = select(AuditRecord)
    if payment_id is not None:
        query = query.where(AuditRecord.payment_id == payment_id)
    if actor is not None:
        query = query.where(AuditRecord.actor == actor)
    if action is not None:
        query = query.where(AuditRecord.action == action)
    if after is not None:
        query = query.where(AuditRecord.id < after[1])
    query = query.order_by(AuditRecord.id.desc()).limit(limit)
    return (await session.scalars(query)).all()


async def for_payments(
    session: AsyncSession, payment_ids: Sequence[str]
) -> dict[str, list[AuditRecord]]:
    """Each payment's records, oldest first."""
    out: dict[str, list[AuditRecord]] = {pid: [] for pid in payment_ids}
    if not payment_ids:
        return out
    query = (
        select(AuditRecord).where(AuditRecord.payment_id.in_(payment_ids)).order_by(AuditRecord.id)
    )
    for record in (await session.scalars(query)).all():
        out[str(record.payment_id)].append(record)
    return out


async def count_since(
    session: AsyncSession,
    *,
    action: str,
    since: datetime,
    payment_id: str | None = None,
    actor: str | None = None,
) -> tuple[int, datetime | None]:
    """How many records of `action` (of one payment, or by one actor) since `since`, and when the
    oldest of them was made."""
    query = select(func.count(), func.min(AuditRecord.at)).where(
        AuditRecord.action == action, AuditRecord.at >= since
    )
    if payment_id is not None:
        query = query.where(AuditRecord.payment_id == payment_id)
    if actor is not None:
        query = query.where(AuditRecord.actor == actor)
    count, oldest = (await session.execute(query)).one()
    return int(count), oldest


async def lock_actor(session: AsyncSession, actor: str, purpose: str) -> None:
    """Serialize, until the transaction ends, what one actor does for `purpose`: a count and the
    record that follows it then cannot race. SQLite writers already queue (BEGIN IMMEDIATE)."""
    if session.get_bind().dialect.name != "postgresql":
        return
    digest = hashlib.blake2b(f"{purpose}:{actor}".encode(), digest_size=8).digest()
    key = int.from_bytes(digest, "big", signed=True)
    await session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": key})
