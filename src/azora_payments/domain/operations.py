"""What operators do to the machinery, from the CLI or the console: replay parked Stripe
events, retry dead jobs, deliver a notification again. Each is idempotent, and audited when an
operator is named."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from azora_payments.db.repositories import events as events_repo
from azora_payments.db.repositories import jobs as jobs_repo
from azora_payments.db.repositories import notifications as notifications_repo
from azora_payments.db.session import Database
from azora_payments.db.types import utcnow
from azora_payments.domain import audit, events, notifications
from azora_payments.jobs.queue import enqueue


@dataclass(frozen=True, slots=True)
class Replayed:
    queued: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)


async def replay_events(
    *, db: Database, event_ids: Sequence[str] | None, actor: audit.Actor | None = None
) -> Replayed:
    """Queue the apply job again for each event (every parked one when `event_ids` is None);
    applying is idempotent, so replaying an applied event changes nothing."""
    result = Replayed()
    async with db.transaction() as session:
        ids = (
            list(await events_repo.ids_with_status(session, events_repo.PARKED))
            if event_ids is None
            else list(event_ids)
        )
        now = utcnow()
        for event_id in ids:
            row = await events_repo.get(session, event_id)
            if row is None:
                result.missing.append(event_id)
                continue
            await events_repo.reopen(session, event_id)
            rearmed = await jobs_repo.rearm(session, unique_key=event_id, now=now)
            if not rearmed and not await jobs_repo.exists(session, event_id):
                await enqueue(
                    session,
                    kind=events.APPLY_KIND,
                    payload={"event_id": event_id},
                    unique_key=event_id,
                )
            result.queued.append(event_id)
            if actor is not None:
                audit.record(
                    session,
                    actor=actor,
                    action="event.replayed",
                    details={"event_id": event_id, "type": row.type, "was": row.status},
                )
    return result


async def retry_dead_jobs(
    *,
    db: Database,
    job_ids: Sequence[int] | None,
    kind: str | None = None,
    actor: audit.Actor | None = None,
) -> list[int]:
    """Dead jobs back to ready, attempts reset (every dead one when `job_ids` is None)."""
    async with db.transaction() as session:
        retried = await jobs_repo.retry_dead(session, now=utcnow(), job_ids=job_ids, kind=kind)
        if actor is not None:
            for job_id in retried:
                audit.record(session, actor=actor, action="job.retried", details={"job_id": job_id})
    return retried


async def redeliver_notification(*, db: Database, notification_id: str, actor: audit.Actor) -> bool:
    """Queue one more delivery of a notification not yet delivered; False when it is unknown or
    was delivered (the delivery job itself also stops at a delivered one)."""
    async with db.transaction() as session:
        row = await notifications_repo.get(session, notification_id)
        if row is None or row.delivered_at is not None:
            return False
        await enqueue(session, kind=notifications.DELIVER, payload={"id": row.id})
        audit.record(
            session,
            actor=actor,
            action="notification.redelivery_requested",
            payment_id=row.payment_id,
            details={"notification_id": row.id, "type": row.type},
        )
    return True
