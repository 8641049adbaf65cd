"""`enqueue`: the transactional outbox. A job is a row written in the caller's transaction."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from azora_payments import metrics
from azora_payments.db.repositories import events as events_repo
from azora_payments.db.repositories import jobs as jobs_repo
from azora_payments.db.session import Database
from azora_payments.db.types import utcnow
from azora_payments.jobs.registry import (
    JobKind,
    UnknownJobKind,
    find_kind,
    get_kind,
    import_kind_modules,
)


async def enqueue(
    session: AsyncSession,
    *,
    kind: str,
    payload: dict[str, Any],
    run_at: datetime | None = None,
    unique_key: str | None = None,
    max_attempts: int | None = None,
) -> None:
    """Add a job to the caller's transaction: it exists (and may run) only once that commits.

    `payload` is JSON: put ids in it, never personal data (it is stored and shown to
    operators). With `unique_key`, a job with that key that already exists — in any status —
    makes this a no-op, so "one receipt per payment" is enqueued at most once.
    """
    spec = _kind(kind)
    if run_at is not None and run_at.tzinfo is None:
        raise ValueError("run_at must be an aware datetime")
    if max_attempts is not None and max_attempts < 1:
        raise ValueError("max_attempts must be at least 1")
    # Fail at the call site, not at the commit that would lose the whole request.
    json.dumps(payload, allow_nan=False)
    now = utcnow()
    attempts = max_attempts if max_attempts is not None else spec.max_attempts
    fields: dict[str, Any] = {
        "kind": kind,
        "payload": payload,
        "run_at": run_at or now,
        "max_attempts": attempts,
        "now": now,
    }
    held: list[dict[str, Any]] | None = session.info.get(_HELD)
    if held is not None:
        held.append(jobs_repo.row(unique_key=unique_key, **fields))
    elif unique_key is None:
        jobs_repo.add(session, **fields)
    else:
        await jobs_repo.insert_unique(session, unique_key=unique_key, **fields)


# `session.info` key of the jobs `enqueue` holds back for `enqueued_together`.
_HELD = "azora.jobs.held"


@asynccontextmanager
async def enqueued_together(session: AsyncSession) -> AsyncIterator[None]:
    """Within the block, `enqueue` on `session` holds its jobs back, and the block's end writes
    them in one statement, in the order enqueued (a unique key seen earlier, here or in the
    table, still makes it a no-op): for a batch that enqueues many. They still commit with the
    caller's transaction, or not at all; only nothing in the block may read them back."""
    if _HELD in session.info:
        yield  # already held by an outer block, which writes them
        return
    held: list[dict[str, Any]] = []
    session.info[_HELD] = held
    try:
        yield
    finally:
        del session.info[_HELD]
    await jobs_repo.insert_many(session, held)


async def refresh_gauges(db: Database, *, known: Iterable[str] = ()) -> set[str]:
    """Set the queue gauges (depth and dead jobs by kind, age of the oldest due job) and the
    webhook backlog's (parked events, age of the oldest unapplied one) from the database, for
    the worker and for the API's /metrics alike; the kinds seen, to keep reporting zeros."""
    now = utcnow()
    async with db.read() as session:
        stats = await jobs_repo.stats(session, now=now)
        parked, oldest_event = await events_repo.backlog(session)
    metrics.WEBHOOK_PARKED.set(parked)
    lag = (now - oldest_event).total_seconds() if oldest_event else 0.0
    metrics.WEBHOOK_OLDEST_UNAPPLIED_AGE.set(max(0.0, lag))
    names = set(known) | set(stats.ready_by_kind) | set(stats.dead_by_kind)
    for name in names:
        metrics.JOB_QUEUE_DEPTH.labels(name).set(stats.ready_by_kind.get(name, 0))
        metrics.JOB_DEAD.labels(name).set(stats.dead_by_kind.get(name, 0))
    age = (now - stats.oldest_due_at).total_seconds() if stats.oldest_due_at else 0.0
    metrics.JOB_OLDEST_READY_AGE.set(max(0.0, age))
    return names


def kind_named(name: str) -> JobKind:
    """The registered kind `name`, importing the kind modules once if it is not known yet."""
    return _kind(name)


def _kind(name: str) -> JobKind:
    found = find_kind(name)
    if found is not None:
        return found
    # A process that enqueues without having imported the kind modules (a command, a test):
    # import them once before calling the name unknown.
    try:
        import_kind_modules()
    except ImportError as exc:  # pragma: no cover - a broken install
        raise UnknownJobKind(f"unknown job kind {name!r} ({exc})") from None
    return get_kind(name)
