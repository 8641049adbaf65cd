"""The audit log: one function records who did what, when and from where, in the caller's
transaction."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from azora_payments.db.models import AuditRecord
from azora_payments.db.repositories import audit as audit_repo
from azora_payments.db.session import Database
from azora_payments.db.types import utcnow
from azora_payments.pagination import decode_cursor, encode_cursor

STRIPE_ACTOR = "stripe"
SYSTEM_ACTOR = "system"


@dataclass(frozen=True, slots=True)
class Actor:
    """Who acts, and the request it came with (none for Stripe and jobs)."""

    id: str
    request_id: str | None = None
    client_ip: str | None = None
    # Where an operator acted from, when not the API (`console`): kept in the record's details.
    channel: str | None = None


STRIPE = Actor(STRIPE_ACTOR)
SYSTEM = Actor(SYSTEM_ACTOR)


def record(
    session: AsyncSession,
    *,
    actor: Actor,
    action: str,
    payment_id: str | None = None,
    details: dict[str, Any] | None = None,
) -> None:
    details = dict(details or {})
    if actor.channel is not None:
        details["channel"] = actor.channel
    audit_repo.add(
        session,
        AuditRecord(
            at=utcnow(),
            actor=actor.id,
            action=action,
            payment_id=payment_id,
            details=details,
            request_id=actor.request_id,
            client_ip=actor.client_ip,
        ),
    )


@dataclass(frozen=True, slots=True)
class AuditPage:
    records: Sequence[AuditRecord]
    next_cursor: str | None


async def list_records(
    *,
    db: Database,
    limit: int,
    cursor: str | None,
    payment_id: str | None,
    actor: str | None,
    action: str | None,
) -> AuditPage:
    """Newest first; filters match exactly."""
    after = decode_cursor(cursor, int) if cursor else None
    async with db.read() as session:
        rows = await audit_repo.page(
            session, limit=limit + 1, after=after, payment_id=payment_id, actor=actor, action=action
        )
    page = rows[:limit]
    has_more = len(rows) > limit
    return AuditPage(
        records=page,
        next_cursor=encode_cursor(page[-1].at, page[-1].id) if has_more else None,
    )
