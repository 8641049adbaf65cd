"""Queries on receipts, their stored versions and their per-year number sequences."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from azora_payments.db.models import Receipt, ReceiptSequence, ReceiptVersion
from azora_payments.db.repositories.rows import one
from azora_payments.db.repositories.upsert import insert_ignore


async def get(
    session: AsyncSession, receipt_id: str, *, for_update: bool = False
) -> Receipt | None:
    if not for_update:
        return await session.get(Receipt, receipt_id)
    return await one(session, select(Receipt).where(Receipt.id == receipt_id), for_update=True)


async def latest_version(session: AsyncSession, receipt_id: str) -> ReceiptVersion | None:
    statement = (
        select(ReceiptVersion)
        .where(ReceiptVersion.receipt_id == receipt_id)
        .order_by(ReceiptVersion.version.desc())
        .limit(1)
    )
    result: ReceiptVersion | None = (await session.scalars(statement)).first()
    return result


async def versions_of(session: AsyncSession, receipt_id: str) -> list[ReceiptVersion]:
    statement = (
        select(ReceiptVersion)
        .where(ReceiptVersion.receipt_id == receipt_id)
        .order_by(ReceiptVersion.version)
    )
    return list((await session.scalars(statement)).all())


async def of_payment(session: AsyncSession, payment_id: str) -> Receipt | None:
    result: Receipt | None = (
        await session.scalars(select(Receipt).where(Receipt.payment_id == payment_id))
    ).first()
    return result


async def next_number(session: AsyncSession, year: int) -> int:
    """Take the next sequence value of `year` in the caller's transaction.

    The UPDATE locks the year's row until the transaction ends (PostgreSQL), and SQLite runs one
    writer at a time: a concurrent issuer waits, then sees the new value. A rollback gives the
    value back, so committed numbers have no gap.
    """
    await insert_ignore(session, ReceiptSequence, {"year": year, "last_value": 0})
    statement = (
        update(ReceiptSequence)
        .where(ReceiptSequence.year == year)
        .values(last_value=ReceiptSequence.last_value + 1)
        .returning(ReceiptSequence.last_value)
    )
    result: Any = await session.execute(statement)
    value: int = result.scalar_one()
    return value


def add(session: AsyncSession, receipt: Receipt | ReceiptVersion) -> None:
    session.add(receipt)
