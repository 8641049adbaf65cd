"""Queries on the durable job queue: insert (outbox), claim with a lease, finish, list, retry."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Delete,
    Update,
    and_,
    case,
    delete,
    func,
    literal,
    select,
    tuple_,
    update,
)
from sqlalchemy.ext.asyncio import AsyncSession

from azora_payments.db.models import Job
from azora_payments.db.repositories.upsert import insert_ignore, insert_ignore_many
from azora_payments.db.types import UTCDateTime
from azora_payments.domain.statuses import JobStatus


def add(
    session: AsyncSession,
    *,
    kind: str,
    payload: dict[str, Any],
    run_at: datetime,
    max_attempts: int,
    now: datetime,
) -> None:
    """A job without a unique key: flushed with the caller's other changes at commit."""
    session.add(
        Job(
            **row(
                kind=kind,
                payload=payload,
                run_at=run_at,
                max_attempts=max_attempts,
                unique_key=None,
                now=now,
            )
        )
    )


async def insert_unique(
    session: AsyncSession,
    *,
    kind: str,
    payload: dict[str, Any],
    run_at: datetime,
    max_attempts: int,
    unique_key: str,
    now: datetime,
) -> bool:
    """Insert unless a job with `unique_key` exists (whatever its status); True if inserted."""
    values = row(
        kind=kind,
        payload=payload,
        run_at=run_at,
        max_attempts=max_attempts,
        unique_key=unique_key,
        now=now,
    )
    return await insert_ignore(session, Job, values, conflict="unique_key")


def row(
    *,
    kind: str,
    payload: dict[str, Any],
    run_at: datetime,
    max_attempts: int,
    unique_key: str | None,
    now: datetime,
) -> dict[str, Any]:
    """A new job's column values (for `add`, `insert_unique` and `insert_many`)."""
    return {
        "kind": kind,
        "payload": payload,
        "status": JobStatus.READY,
        "attempts": 0,
        "max_attempts": max_attempts,
        "run_at": run_at,
        "unique_key": unique_key,
        "created_at": now,
        "updated_at": now,
    }


async def insert_many(session: AsyncSession, rows: list[dict[str, Any]]) -> None:
    """Insert `row()`s in one executemany (one round trip on asyncpg), in order; a row whose
    unique key exists already (in any status, or earlier in `rows`) is left out, as
    `insert_unique` would leave it."""
    seen: set[str] = set()
    kept = []
    for values in rows:
        key = values["unique_key"]
        if key is None or key not in seen:
            kept.append(values)
            if key is not None:
                seen.add(key)
    await insert_ignore_many(session, Job, kept, conflict="unique_key")


@dataclass(frozen=True, slots=True)
class ClaimedJob:
    """A plain copy of a claimed row, safe to use after its session is gone."""

    id: int
    kind: str
    payload: dict[str, Any]
    attempts: int
    max_attempts: int
    run_at: datetime
    unique_key: str | None
    locked_until: datetime


async def claim(
    session: AsyncSession,
    *,
    leases: Mapping[str, timedelta],
    worker_id: str,
    now: datetime,
    limit: int,
) -> list[ClaimedJob]:
    """Take up to `limit` due jobs of the kinds in `leases`, oldest first, in one statement.

    On PostgreSQL the rows are picked with FOR UPDATE SKIP LOCKED, so concurrent workers pass
    over each other's picks instead of queueing behind them; SQLite has one writer at a time.
    Each job is leased for its kind's time: past `locked_until` another worker may take it.
    """
    if not leases or limit < 1:
        return []
    pick = (
        select(Job.id)
        .where(Job.status == JobStatus.READY, Job.run_at <= now, Job.kind.in_(list(leases)))
        .order_by(Job.run_at, Job.id)
        .limit(limit)
    )
    if session.get_bind().dialect.name == "postgresql":
        pick = pick.with_for_update(skip_locked=True)
    lease_until = case(
        {kind: literal(now + lease, UTCDateTime()) for kind, lease in leases.items()},
        value=Job.kind,
        else_=literal(now + max(leases.values()), UTCDateTime()),
    )
    stmt = (
        update(Job)
        .where(Job.id.in_(pick.scalar_subquery()))
        .values(
            status=JobStatus.RUNNING,
            attempts=Job.attempts + 1,
            locked_by=worker_id,
            locked_until=lease_until,
            updated_at=now,
        )
        .returning(
            Job.id,
            Job.kind,
            Job.payload,
            Job.attempts,
            Job.max_attempts,
            Job.run_at,
            Job.unique_key,
            Job.locked_until,
        )
        .execution_options(synchronize_session=False)
    )
    rows = (await session.execute(stmt)).all()
    jobs = [ClaimedJob(*row) for row in rows]
    jobs.sort(key=lambda job: (job.run_at, job.id))
    return jobs


async def _update_owned(
    session: AsyncSession, job_id: int, worker_id: str, attempt: int, /, **values: Any
) -> bool:
    """Set `values` on the job if this worker's attempt still owns it; False if it does not.

    A worker only finishes its own claim: if its lease ran out and another worker (or a later
    attempt) took the job, this attempt's late result is dropped."""
    stmt = (
        update(Job)
        .where(
            Job.id == job_id,
            Job.status == JobStatus.RUNNING,
            Job.locked_by == worker_id,
            Job.attempts == attempt,
        )
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    return await _rowcount(session, stmt) == 1


async def _update_held(
    session: AsyncSession, *, claims: Sequence[tuple[int, int]], worker_id: str, **values: Any
) -> set[int]:
    """Set `values` on the (job id, attempt) claims this worker still holds; their ids."""
    if not claims:
        return set()
    stmt = (
        update(Job)
        .where(
            tuple_(Job.id, Job.attempts).in_(list(claims)),
            Job.status == JobStatus.RUNNING,
            Job.locked_by == worker_id,
        )
        .values(**values)
        .returning(Job.id)
        .execution_options(synchronize_session=False)
    )
    return set((await session.scalars(stmt)).all())


def _finished(status: JobStatus, now: datetime) -> dict[str, Any]:
    return {
        "status": status,
        "locked_by": None,
        "locked_until": None,
        "finished_at": now,
        "updated_at": now,
    }


async def _rowcount(session: AsyncSession, stmt: Update | Delete) -> int:
    result: Any = await session.execute(stmt)
    count: int = result.rowcount
    return count


async def mark_done(
    session: AsyncSession, *, job_id: int, worker_id: str, attempt: int, now: datetime
) -> bool:
    done = _finished(JobStatus.DONE, now)
    return await _update_owned(session, job_id, worker_id, attempt, **done)


async def mark_done_many(
    session: AsyncSession,
    *,
    claims: Sequence[tuple[int, int]],
    worker_id: str,
    now: datetime,
) -> set[int]:
    """Mark done the (job id, attempt) claims this worker still owns; returns their ids."""
    return await _update_held(
        session, claims=claims, worker_id=worker_id, **_finished(JobStatus.DONE, now)
    )


async def renew(
    session: AsyncSession,
    *,
    claims: Sequence[tuple[int, int]],
    worker_id: str,
    now: datetime,
    until: datetime,
) -> set[int]:
    """Extend the leases of the (job id, attempt) claims this worker still holds; their ids.

    A lease that ran out but was not taken yet is renewed too: its owner is alive after all.
    """
    return await _update_held(
        session, claims=claims, worker_id=worker_id, locked_until=until, updated_at=now
    )


async def reschedule(
    session: AsyncSession,
    *,
    job_id: int,
    worker_id: str,
    attempt: int,
    now: datetime,
    run_at: datetime,
    last_error: str | None,
    reset_attempts: bool = False,
    finished: bool = False,
) -> bool:
    """Back to ready at `run_at`: a retry after a failure, or a scheduled kind's next slot."""
    values: dict[str, Any] = {
        "status": JobStatus.READY,
        "run_at": run_at,
        "locked_by": None,
        "locked_until": None,
        "updated_at": now,
    }
    if last_error is not None:
        values["last_error"] = last_error
    if reset_attempts:
        values["attempts"] = 0
    if finished:
        values["finished_at"] = now
    return await _update_owned(session, job_id, worker_id, attempt, **values)


async def mark_dead(
    session: AsyncSession,
    *,
    job_id: int,
    worker_id: str,
    attempt: int,
    now: datetime,
    last_error: str,
) -> bool:
    dead = _finished(JobStatus.DEAD, now)
    return await _update_owned(session, job_id, worker_id, attempt, last_error=last_error, **dead)


async def release(
    session: AsyncSession, *, job_id: int, worker_id: str, attempt: int, now: datetime
) -> bool:
    """Give back a job this worker was stopped in the middle of: it did not fail, so the
    attempt is not counted, and it is due at once for another worker."""
    return await _update_owned(
        session,
        job_id,
        worker_id,
        attempt,
        status=JobStatus.READY,
        attempts=Job.attempts - 1,
        run_at=now,
        locked_by=None,
        locked_until=None,
        updated_at=now,
    )


@dataclass(frozen=True, slots=True)
class LostJob:
    id: int
    kind: str
    status: str


async def recover_expired(
    session: AsyncSession, *, now: datetime, scheduled_kinds: Sequence[str] = ()
) -> list[LostJob]:
    """Jobs whose lease ran out (their worker died or hung) become due again, or dead when
    that was their last attempt; `scheduled_kinds` never die, they start their attempts over."""
    expired: ColumnElement[bool] = and_(Job.status == JobStatus.RUNNING, Job.locked_until < now)
    error = "lease expired: the worker was lost during this attempt"
    exhausted = Job.attempts >= Job.max_attempts
    stmt = (
        update(Job)
        .where(expired)
        .values(
            # Plain strings: a CASE result has no column to take its type from, and SQLAlchemy
            # gives an enum member none (the driver would get an untyped parameter).
            status=case(
                (and_(exhausted, Job.kind.not_in(list(scheduled_kinds))), JobStatus.DEAD.value),
                else_=JobStatus.READY.value,
            ),
            attempts=case(
                (and_(exhausted, Job.kind.in_(list(scheduled_kinds))), 0), else_=Job.attempts
            ),
            run_at=now,
            finished_at=case(
                (
                    and_(exhausted, Job.kind.not_in(list(scheduled_kinds))),
                    literal(now, UTCDateTime()),
                ),
                else_=Job.finished_at,
            ),
            last_error=error,
            locked_by=None,
            locked_until=None,
            updated_at=now,
        )
        .returning(Job.id, Job.kind, Job.status)
        .execution_options(synchronize_session=False)
    )
    return [LostJob(*row) for row in (await session.execute(stmt)).all()]


async def ensure_scheduled(
    session: AsyncSession,
    *,
    kind: str,
    unique_key: str,
    run_at: datetime,
    max_attempts: int,
    now: datetime,
    latest: datetime,
) -> bool:
    """Create a scheduled kind's one row if it is missing; True if it was created.

    A waiting row due after `latest` (the interval was shortened since it was armed) is
    brought forward to `latest`.
    """
    created = await insert_unique(
        session,
        kind=kind,
        payload={},
        run_at=run_at,
        max_attempts=max_attempts,
        unique_key=unique_key,
        now=now,
    )
    if not created:
        await session.execute(
            update(Job)
            .where(Job.unique_key == unique_key, Job.status == JobStatus.READY, Job.run_at > latest)
            .values(run_at=latest, updated_at=now)
            .execution_options(synchronize_session=False)
        )
    return created


async def get(session: AsyncSession, job_id: int) -> Job | None:
    return await session.get(Job, job_id)


async def list_jobs(
    session: AsyncSession,
    *,
    status: str | None = None,
    kind: str | None = None,
    limit: int = 100,
) -> Sequence[Job]:
    """Most recently updated first."""
    query = select(Job)
    if status is not None:
        query = query.where(Job.status == status)
    if kind is not None:
        query = query.where(Job.kind == kind)
    query = query.order_by(Job.updated_at.desc(), Job.id.desc()).limit(limit)
    return (await session.scalars(query)).all()


async def retry_dead(
    session: AsyncSession,
    *,
    now: datetime,
    job_ids: Sequence[int] | None = None,
    kind: str | None = None,
) -> list[int]:
    """Dead jobs back to ready with their attempts reset (all of them when `job_ids` is None)."""
    which: list[ColumnElement[bool]] = [Job.status == JobStatus.DEAD]
    if job_ids is not None:
        which.append(Job.id.in_(list(job_ids)))
    if kind is not None:
        which.append(Job.kind == kind)
    return await _start_over(session, *which, now=now)


async def _start_over(
    session: AsyncSession, *which: ColumnElement[bool], now: datetime, **also: Any
) -> list[int]:
    """Finished jobs back to ready, due now, with all their attempts again; their ids."""
    stmt = (
        update(Job)
        .where(*which)
        .values(
            status=JobStatus.READY,
            attempts=0,
            run_at=now,
            finished_at=None,
            locked_by=None,
            locked_until=None,
            updated_at=now,
            **also,
        )
        .returning(Job.id)
        .execution_options(synchronize_session=False)
    )
    return sorted((await session.scalars(stmt)).all())


@dataclass(frozen=True, slots=True)
class QueueStats:
    ready_by_kind: dict[str, int]
    dead_by_kind: dict[str, int]
    oldest_due_at: datetime | None


async def stats(session: AsyncSession, *, now: datetime) -> QueueStats:
    counts = (
        await session.execute(
            select(Job.kind, Job.status, func.count())
            .where(Job.status.in_([JobStatus.READY, JobStatus.DEAD]))
            .group_by(Job.kind, Job.status)
        )
    ).all()
    ready: dict[str, int] = {}
    dead: dict[str, int] = {}
    for kind, status, count in counts:
        (ready if status == JobStatus.READY else dead)[kind] = int(count)
    # Scheduled kinds wait in `ready` for their next slot: only jobs already due are "late".
    oldest = await session.scalar(
        select(func.min(Job.run_at)).where(Job.status == JobStatus.READY, Job.run_at <= now)
    )
    return QueueStats(ready, dead, oldest)


async def delete_finished_before(
    session: AsyncSession, *, before: datetime, limit: int = 10_000
) -> int:
    """Delete up to `limit` done jobs finished before `before` (a bounded batch per call)."""
    batch = (
        select(Job.id)
        .where(Job.status == JobStatus.DONE, Job.finished_at < before)
        .order_by(Job.id)
        .limit(limit)
        .scalar_subquery()
    )
    stmt = delete(Job).where(Job.id.in_(batch)).execution_options(synchronize_session=False)
    return await _rowcount(session, stmt)


async def rearm(session: AsyncSession, *, unique_key: str, now: datetime) -> bool:
    """Put the finished (done or dead) job with `unique_key` back to ready, attempts reset;
    False when there is none (the caller enqueues a new one) or it is still queued/running."""
    finished = Job.status.in_((JobStatus.DONE, JobStatus.DEAD))
    return bool(
        await _start_over(session, Job.unique_key == unique_key, finished, now=now, last_error=None)
    )


async def exists(session: AsyncSession, unique_key: str) -> bool:
    found = await session.scalar(select(Job.id).where(Job.unique_key == unique_key))
    return found is not None
