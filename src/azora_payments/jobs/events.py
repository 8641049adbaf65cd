"""Job kinds for Stripe events (`stripe.event.apply`, the scheduled `stripe.reconcile`) and the
`reconcile` and `events list|replay` commands, called by `azora_payments.cli`."""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Sequence
from datetime import timedelta
from typing import Any, TextIO

from sqlalchemy.ext.asyncio import AsyncSession

from azora_payments.config import Settings
from azora_payments.db.repositories import events as events_repo
from azora_payments.db.session import Database
from azora_payments.domain import declines, events, operations, reconcile
from azora_payments.jobs.registry import (
    AfterCommit,
    JobContext,
    batch_handler,
    job_kind,
    scheduled_job,
)
from azora_payments.logs import log_fields
from azora_payments.services import Services

logger = logging.getLogger(__name__)

# About two days of retries with the queue's capped backoff (5 s doubling to 1 h): longer than
# any outage we expect to ride out, short enough that a poisoned event is parked and seen.
APPLY_MAX_ATTEMPTS = 15


@job_kind(events.APPLY_KIND, max_attempts=APPLY_MAX_ATTEMPTS, timeout=60.0)
async def apply_event(ctx: JobContext, payload: dict[str, Any]) -> None:
    event_id = str(payload["event_id"])
    try:
        # A decline Stripe reports by webhook counts against the limits like one it answers.
        with declines.collecting() as recorded:
            await events.apply_recorded(ctx.services.db, event_id)
        await ctx.services.declines.count(recorded)
    except Exception as exc:
        await events.note_failure(
            ctx.services.db,
            event_id,
            error=f"{type(exc).__name__}: {exc}"[:2000],
            park=ctx.is_last_attempt,
        )
        raise


@batch_handler(events.APPLY_KIND)
async def apply_events(
    services: Services, session: AsyncSession, payloads: list[dict[str, Any]]
) -> AfterCommit:
    """Apply several recorded events in the worker's transaction, in the order claimed (the
    queue's: oldest first). Applying is a handful of short statements, so one commit for a
    batch instead of three per event is most of the saving; any error rolls the batch back and
    each event is then applied alone by `apply_event`, which records its failure."""
    with declines.collecting() as recorded:
        done = await events.apply_batch_in(session, [str(p["event_id"]) for p in payloads])

    async def after_commit() -> None:
        for applied in done:
            events.report_applied(applied)
        await services.declines.count(recorded)

    return after_commit


@scheduled_job("stripe.reconcile", every=timedelta(minutes=5), timeout=240.0)
async def reconcile_with_stripe(ctx: JobContext, payload: dict[str, Any]) -> None:
    with declines.collecting() as recorded:
        report = await reconcile.reconcile(ctx.services)
    await ctx.services.declines.count(recorded)
    for line in report.changes:
        logger.info("reconciled", extra=log_fields(job_id=ctx.job_id, change=line))


# ------------------------------------------------------------------ commands


def reconcile_command(settings: Settings, *, out: TextIO = sys.stdout) -> int:
    async def run() -> reconcile.Report:
        services = Services(settings)
        try:
            return await reconcile.reconcile(services)
        finally:
            await services.close()

    report = asyncio.run(run())
    for line in report.lines():
        print(line, file=out)
    return 1 if report.errors else 0


def list_command(
    settings: Settings, *, status: str | None, limit: int, out: TextIO = sys.stdout
) -> int:
    async def fetch() -> list[tuple[str, str, str, str, int, str, str]]:
        db = Database(settings.database_url, pool_size=1, pooler=settings.database_pooler)
        try:
            async with db.transaction() as session:
                rows = await events_repo.listing(session, status=status, limit=limit)
                return [
                    (
                        row.id,
                        row.type,
                        row.status,
                        row.source,
                        row.attempts,
                        row.received_at.isoformat().replace("+00:00", "Z"),
                        (row.last_error or "").strip().splitlines()[0]
                        if (row.last_error or "").strip()
                        else "",
                    )
                    for row in rows
                ]
        finally:
            await db.dispose()

    rows = asyncio.run(fetch())
    header = ("id", "type", "status", "source", "attempts", "received_at", "last_error")
    table = [(i, t, s, src, str(a), at, err[:120]) for i, t, s, src, a, at, err in rows]
    widths = [max([len(h), *(len(r[n]) for r in table)]) for n, h in enumerate(header[:-1])]
    for line in [header, *table]:
        cells = [cell.ljust(widths[n]) for n, cell in enumerate(line[:-1])]
        print("  ".join([*cells, line[-1]]).rstrip(), file=out)
    print(f"({len(rows)} event{'s' if len(rows) != 1 else ''})", file=out)
    return 0


def replay_command(
    settings: Settings,
    *,
    event_ids: Sequence[str],
    all_parked: bool,
    out: TextIO = sys.stdout,
    err: TextIO = sys.stderr,
) -> int:
    """Queue the apply job again for each event; applying is idempotent, so replaying an
    applied event changes nothing."""

    async def replay() -> tuple[list[str], list[str]]:
        db = Database(settings.database_url, pool_size=1, pooler=settings.database_pooler)
        try:
            result = await operations.replay_events(
                db=db, event_ids=None if all_parked else list(event_ids)
            )
        finally:
            await db.dispose()
        return result.queued, result.missing

    done, missing = asyncio.run(replay())
    for event_id in done:
        print(f"event {event_id}: queued", file=out)
    for event_id in missing:
        print(f"azora-payments: event {event_id} is not recorded", file=err)
    print(f"{len(done)} event{'s' if len(done) != 1 else ''} queued", file=out)
    return 1 if missing else 0
