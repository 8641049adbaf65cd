"""Queries on recorded Stripe events (webhook_events), and the lookups that match an event's
object to one of our payments."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from azora_payments.db.models import Job, Payment, SyncCursor, WebhookEvent
from azora_payments.db.repositories.rows import one
from azora_payments.db.repositories.upsert import insert_ignore
from azora_payments.db.types import utcnow
from azora_payments.domain.statuses import EventStatus, JobStatus

RECEIVED = EventStatus.RECEIVED
APPLIED = EventStatus.APPLIED
IGNORED = EventStatus.IGNORED
PARKED = EventStatus.PARKED
STATUSES = (RECEIVED, APPLIED, IGNORED, PARKED)
# Nothing more to do for these: a redelivery or a replay finds them and stops.
SETTLED = frozenset({APPLIED, IGNORED})


async def insert(session: AsyncSession, values: dict[str, Any]) -> bool:
    """Record an event unless its id is already recorded; True when this call recorded it."""
    return await insert_ignore(session, WebhookEvent, values)


async def get(
    session: AsyncSession, event_id: str, *, for_update: bool = False
) -> WebhookEvent | None:
    query = select(WebhookEvent).where(WebhookEvent.id == event_id)
    return await one(session, query, for_update=for_update)


async def lock_many(session: AsyncSession, event_ids: Sequence[str]) -> Sequence[WebhookEvent]:
    """These recorded events, locked in id order (see `payments_repo.lock_by_intents`)."""
    if not event_ids:
        return []
    query = (
        select(WebhookEvent)
        .where(WebhookEvent.id.in_(event_ids))
        .order_by(WebhookEvent.id)
        .with_for_update()
    )
    return (await session.scalars(query)).all()


async def cursor(session: AsyncSession, name: str) -> datetime | None:
    row = await session.get(SyncCursor, name)
    return row.position if row is not None else None


async def move_cursor(session: AsyncSession, name: str, position: datetime) -> None:
    row = await session.get(SyncCursor, name, with_for_update=True)
    if row is None:
        session.add(SyncCursor(name=name, position=position, updated_at=utcnow()))
    elif position > row.position:
        row.position = position


async def newest_created(session: AsyncSession) -> datetime | None:
    result: datetime | None = await session.scalar(select(func.max(WebhookEvent.stripe_created)))
    return result


async def listing(
    session: AsyncSession, *, status: str | None, limit: int
) -> Sequence[WebhookEvent]:
    query = select(WebhookEvent)
    if status is not None:
        query = query.where(WebhookEvent.status == status)
    query = query.order_by(WebhookEvent.received_at.desc(), WebhookEvent.id.desc()).limit(limit)
    return (await session.scalars(query)).all()


async def ids_with_status(session: AsyncSession, status: str) -> Sequence[str]:
    query = (
        select(WebhookEvent.id)
        .where(WebhookEvent.status == status)
        .order_by(WebhookEvent.stripe_created, WebhookEvent.id)
    )
    return (await session.scalars(query)).all()


async def note_failure(
    session: AsyncSession, *, event_id: str, error: str, park: bool, now: datetime
) -> None:
    """Count a failed apply; `park` it when the queue gives up. Applied events stay applied."""
    values: dict[str, Any] = {
        "attempts": WebhookEvent.attempts + 1,
        "last_error": error,
    }
    if park:
        values["status"] = PARKED
    await session.execute(
        update(WebhookEvent)
        .where(WebhookEvent.id == event_id, WebhookEvent.status.not_in(SETTLED))
        .values(**values)
        .execution_options(synchronize_session=False)
    )


async def park_where_job_dead(session: AsyncSession, *, apply_kind: str) -> Sequence[str]:
    """Events still `received` whose apply job is dead without the handler having parked them
    (its lease ran out on the last attempt): park them so operators see them."""
    dead = select(Job.unique_key).where(Job.kind == apply_kind, Job.status == JobStatus.DEAD)
    ids = (
        await session.scalars(
            select(WebhookEvent.id).where(
                WebhookEvent.status == RECEIVED, WebhookEvent.id.in_(dead)
            )
        )
    ).all()
    if ids:
        await session.execute(
            update(WebhookEvent)
            .where(WebhookEvent.id.in_(ids))
            .values(status=PARKED)
            .execution_options(synchronize_session=False)
        )
    return ids


async def reopen(session: AsyncSession, event_id: str) -> None:
    """A parked event goes back to `received` for a replay."""
    await session.execute(
        update(WebhookEvent)
        .where(WebhookEvent.id == event_id, WebhookEvent.status == PARKED)
        .values(status=RECEIVED)
        .execution_options(synchronize_session=False)
    )


async def about_objects(
    session: AsyncSession, object_ids: Sequence[str], *, limit: int = 200
) -> Sequence[WebhookEvent]:
    """Events whose object is one of `object_ids`, in Stripe's order."""
    if not object_ids:
        return []
    query = (
        select(WebhookEvent)
        .where(WebhookEvent.object_id.in_(list(object_ids)))
        .order_by(WebhookEvent.stripe_created, WebhookEvent.id)
        .limit(limit)
    )
    return (await session.scalars(query)).all()


# ------------------------------------------------------------------ matching objects to payments


async def payment_by_charge(
    session: AsyncSession, charge_id: str, *, for_update: bool = False
) -> Payment | None:
    query = select(Payment).where(Payment.stripe_charge_id == charge_id)
    return await one(session, query, for_update=for_update)


async def backlog(session: AsyncSession) -> tuple[int, datetime | None]:
    """How many events are parked, and when the oldest not yet applied was received."""
    parked = await session.scalar(
        select(func.count()).select_from(WebhookEvent).where(WebhookEvent.status == PARKED)
    )
    oldest = await session.scalar(
        select(func.min(WebhookEvent.received_at)).where(WebhookEvent.status == RECEIVED)
    )
    return int(parked or 0), oldest


# An event and its apply job in one statement (PostgreSQL): the job is inserted only when the
# event was; the answer is 1 when it was recorded, 0 for a duplicate. The payload is the body as
# received (verified, and parsed once already): JSONB stores the same value as its dump would.
# Written for the driver (`$n` placeholders): the ingest sends it without SQLAlchemy.
_RECORD_WITH_JOB = """
WITH recorded AS (
    INSERT INTO webhook_events (id, type, livemode, api_version, stripe_created, object_id,
                                payload, status, attempts, source, received_at)
    VALUES ($1, $2, $3, $4, $5, $6, CAST($7::text AS JSONB), $8, $9, $10, $11)
    ON CONFLICT DO NOTHING
    RETURNING id
), queued AS (
    INSERT INTO jobs (kind, payload, status, attempts, max_attempts, run_at, unique_key,
                      created_at, updated_at)
    SELECT $12, jsonb_build_object('event_id', id), $13, 0, $14, $11, id, $11, $11
    FROM recorded
    ON CONFLICT (unique_key) DO NOTHING
)
SELECT count(*) FROM recorded
"""


async def record_with_job(
    connection: Any,
    values: dict[str, Any],
    *,
    payload_json: str,
    job_kind: str,
    max_attempts: int,
) -> bool:
    """Record an event (`values`, its payload given as JSON text) and queue its apply job
    (unique key: the event id) in one statement on an asyncpg `connection`
    (`Database.driver_statement`); True when the event was new. PostgreSQL."""
    count = await connection.fetchval(
        _RECORD_WITH_JOB,
        values["id"],
        values["type"],
        values["livemode"],
        values["api_version"],
        _utc(values["stripe_created"]),
        values["object_id"],
        payload_json,
        values["status"],
        values["attempts"],
        values["source"],
        _utc(values["received_at"]),
        job_kind,
        JobStatus.READY.value,
        max_attempts,
    )
    return bool(count)


def _utc(value: datetime) -> datetime:
    # What `UTCDateTime` checks on every other path: never a naive time.
    if value.tzinfo is None:
        raise ValueError("naive datetime given to a UTC column")
    return value
