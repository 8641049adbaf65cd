"""Queries of the operator console: its sessions, sign-in links and refund approvals."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from azora_payments.db.models import ConsoleSession, ConsoleSignInLink, RefundApproval
from azora_payments.db.repositories.rows import one


def add(session: AsyncSession, row: ConsoleSession | ConsoleSignInLink | RefundApproval) -> None:
    session.add(row)


async def live_session(
    session: AsyncSession, *, id_hash: str, now: datetime
) -> ConsoleSession | None:
    query = select(ConsoleSession).where(
        ConsoleSession.id_hash == id_hash, ConsoleSession.expires_at > now
    )
    result: ConsoleSession | None = (await session.scalars(query)).first()
    return result


async def delete_session(session: AsyncSession, *, id_hash: str) -> None:
    await session.execute(delete(ConsoleSession).where(ConsoleSession.id_hash == id_hash))


async def delete_expired(session: AsyncSession, *, now: datetime) -> None:
    await session.execute(delete(ConsoleSession).where(ConsoleSession.expires_at <= now))
    await session.execute(delete(ConsoleSignInLink).where(ConsoleSignInLink.expires_at <= now))


async def take_link(
    session: AsyncSession, *, nonce_hash: str, now: datetime
) -> ConsoleSignInLink | None:
    """The link, deleted in the same statement: of two redeemers at once, one gets it."""
    query = select(ConsoleSignInLink).where(
        ConsoleSignInLink.nonce_hash == nonce_hash, ConsoleSignInLink.expires_at > now
    )
    link: ConsoleSignInLink | None = (await session.scalars(query)).first()
    if link is None:
        return None
    result: Any = await session.execute(
        delete(ConsoleSignInLink).where(ConsoleSignInLink.nonce_hash == nonce_hash)
    )
    return link if result.rowcount else None


async def approval(
    session: AsyncSession, approval_id: str, *, for_update: bool = False
) -> RefundApproval | None:
    query = select(RefundApproval).where(RefundApproval.id == approval_id)
    return await one(session, query, for_update=for_update)


async def approval_by_key(session: AsyncSession, request_key: str) -> RefundApproval | None:
    query = select(RefundApproval).where(RefundApproval.request_key == request_key)
    result: RefundApproval | None = (await session.scalars(query)).first()
    return result


async def approvals_of(session: AsyncSession, payment_id: str) -> Sequence[RefundApproval]:
    query = (
        select(RefundApproval)
        .where(RefundApproval.payment_id == payment_id)
        .order_by(RefundApproval.created_at.desc())
    )
    return (await session.scalars(query)).all()


async def pending_approvals(session: AsyncSession, *, limit: int) -> Sequence[RefundApproval]:
    query = (
        select(RefundApproval)
        .where(RefundApproval.status == "pending")
        .order_by(RefundApproval.created_at.desc())
        .limit(limit)
    )
    return (await session.scalars(query)).all()


async def decide(
    session: AsyncSession, *, approval_id: str, status: str, by: str, at: datetime
) -> bool:
    """Move a pending approval to `status`; False when another operator decided first."""
    result: Any = await session.execute(
        update(RefundApproval)
        .where(RefundApproval.id == approval_id, RefundApproval.status == "pending")
        .values(status=status, decided_by=by, decided_at=at)
        .execution_options(synchronize_session=False)
    )
    return bool(result.rowcount)
